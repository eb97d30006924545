"""Keras' SparseCategoricalCrossentropy on probabilities, against a NumPy reference."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import fedjax_like as fl


def test_matches_keras_clipped_log_loss():
  probabilities = np.array([[0.05, 0.95, 0.0], [0.1, 0.8, 0.1], [0.0, 0.0, 1.0]], np.float32)
  labels = np.array([1, 2, 0])
  clipped = np.clip(probabilities.astype(np.float64), 1e-7, 1 - 1e-7)
  expected = -np.log(clipped[np.arange(3), labels])  # Keras: [0.0513, 2.3026, 16.118]
  loss = fl.models.SparseCategoricalCrossentropy()(jnp.asarray(probabilities), jnp.asarray(labels))
  assert loss.shape == (3,)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  logits = np.log(probabilities + 0.01)
  from_logits = fl.models.SparseCategoricalCrossentropy(from_logits=True)(logits, labels)
  shifted = logits - logits.max(-1, keepdims=True)
  reference = -(shifted - np.log(np.exp(shifted).sum(-1, keepdims=True)))[np.arange(3), labels]
  np.testing.assert_allclose(from_logits, reference, rtol=1e-5)


class KerasStyle(nn.Module):
  """TFF's quickstart model: Dense(10, softmax)."""

  softmax: bool = True

  @nn.compact
  def __call__(self, x):
    z = nn.Dense(10)(x)
    return nn.softmax(z) if self.softmax else z


def test_a_softmax_model_trains_as_its_logits_twin():
  """-log softmax(z)[y] is the logits loss: same gradients, so the same training."""
  spec = (jax.ShapeDtypeStruct((8,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
  keras = fl.models.from_linen(
      KerasStyle(), spec, loss_fn=fl.models.SparseCategoricalCrossentropy()
  )
  logits = fl.models.from_linen(KerasStyle(softmax=False), spec)
  weights = keras.init_fn(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = (rng.normal(size=(5, 8)).astype(np.float32), rng.integers(0, 10, size=5))
  mask = np.array([True, True, True, True, False])

  def grads(model):
    return jax.jit(jax.grad(lambda w: model.batch_loss(w, batch, mask)[0]))(weights)

  for a, b in zip(jax.tree.leaves(grads(keras)), jax.tree.leaves(grads(logits)), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
