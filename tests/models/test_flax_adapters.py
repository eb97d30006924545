"""linen and nnx adapters give identical results for the same architecture and weights."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import fedjax_like as fl
from fedjax_like.data import Dataset

SPEC = (jax.ShapeDtypeStruct((6,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))


class LinenMLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(8, name='hidden')(x))
    return nn.Dense(3, name='out')(x)


class NnxMLP(nnx.Module):
  def __init__(self, rngs):
    self.hidden = nnx.Linear(6, 8, rngs=rngs)
    self.out = nnx.Linear(8, 3, rngs=rngs)

  def __call__(self, x):
    return self.out(nnx.relu(self.hidden(x)))


def linen_to_nnx_weights(linen_params, nnx_model_weights):
  """Copies linen's {'hidden': {kernel, bias}, ...} into the nnx state structure."""
  trainable = {
      layer: {'kernel': linen_params[layer]['kernel'], 'bias': linen_params[layer]['bias']}
      for layer in ('hidden', 'out')
  }
  assert jax.tree.structure(trainable) == jax.tree.structure(nnx_model_weights.trainable)
  return nnx_model_weights._replace(trainable=trainable)


def test_linen_and_nnx_train_identically():
  linen_model = fl.models.from_linen(LinenMLP(), SPEC)
  nnx_model = fl.models.from_nnx(lambda rngs: NnxMLP(rngs), SPEC)
  rng = np.random.default_rng(0)
  clients = [
      Dataset((rng.normal(size=(n, 6)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32)))
      .batch(4)
      for n in (5, 9, 3)
  ]
  opt = fl.learning.optimizers.build_sgdm(0.1, momentum=0.5)
  p_linen = fl.learning.algorithms.build_weighted_fed_avg(linen_model, opt)
  p_nnx = fl.learning.algorithms.build_weighted_fed_avg(nnx_model, opt)
  s_linen = p_linen.initialize()
  s_nnx = p_nnx.initialize()
  s_nnx = p_nnx.set_model_weights(
      s_nnx, linen_to_nnx_weights(s_linen.global_model_weights.trainable, s_nnx.global_model_weights)
  )
  for _ in range(3):
    s_linen, m_linen = p_linen.next(s_linen, clients)
    s_nnx, m_nnx = p_nnx.next(s_nnx, clients)
    np.testing.assert_allclose(
        m_linen['client_work']['train']['loss'], m_nnx['client_work']['train']['loss'], rtol=1e-6
    )
  for layer in ('hidden', 'out'):
    for name in ('kernel', 'bias'):
      np.testing.assert_allclose(
          s_linen.global_model_weights.trainable[layer][name],
          s_nnx.global_model_weights.trainable[layer][name],
          rtol=1e-6,
          atol=1e-7,
      )


def test_nnx_built_module_and_factory_init():
  built = fl.models.from_nnx(NnxMLP(nnx.Rngs(3)), SPEC)
  w1 = built.init_fn(jax.random.key(0))
  w2 = built.init_fn(jax.random.key(1))
  np.testing.assert_array_equal(w1.trainable['out']['bias'], w2.trainable['out']['bias'])
  factory = fl.models.from_nnx(lambda rngs: NnxMLP(rngs), SPEC)
  k1 = factory.init_fn(jax.random.key(0)).trainable['hidden']['kernel']
  k2 = factory.init_fn(jax.random.key(1)).trainable['hidden']['kernel']
  assert not np.allclose(k1, k2)
  assert factory.num_outputs == 3


def test_metric_sums_ignore_masked_examples():
  model = fl.models.from_linen(LinenMLP(), SPEC)
  weights = model.init_fn(jax.random.key(0))
  x = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
  y = np.array([0, 1, 2, 1], np.int32)
  mask = np.array([True, True, False, False])
  sums = model.eval_sums(weights, (x, y), mask)
  logits = np.asarray(model.apply_fn(weights, x[:2], None, False), np.float64)
  logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  np.testing.assert_allclose(sums['loss'], -logp[np.arange(2), y[:2]].sum(), rtol=1e-5)
  assert float(sums['num_examples']) == 2
  np.testing.assert_allclose(sums['accuracy'], (logits.argmax(1) == y[:2]).sum())


class NnxDropout(nnx.Module):
  def __init__(self, rngs):
    self.linear = nnx.Linear(4, 3, rngs=rngs)
    self.dropout = nnx.Dropout(0.5, rngs=rngs)

  def __call__(self, x):
    return self.dropout(self.linear(x))


def test_nnx_dropout_follows_the_key_in_training_and_is_off_in_evaluation():
  spec = (jax.ShapeDtypeStruct((4,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
  model = fl.models.from_nnx(lambda rngs: NnxDropout(rngs), spec)
  weights = model.init_fn(jax.random.key(0))
  x = np.ones((16, 4), np.float32)
  train = jax.jit(lambda w, x, k: model.apply_fn(w, x, k, True))
  evaluate = jax.jit(lambda w, x: model.apply_fn(w, x, None, False))
  a, b = train(weights, x, jax.random.key(1)), train(weights, x, jax.random.key(2))
  assert not np.allclose(a, b)  # a new key gives a new dropout mask
  np.testing.assert_array_equal(a, train(weights, x, jax.random.key(1)))
  linear = x @ np.asarray(weights.trainable['linear']['kernel']) + weights.trainable['linear']['bias']
  np.testing.assert_allclose(evaluate(weights, x), linear, rtol=1e-6, atol=1e-6)


def test_linen_batch_norm_is_refused_with_a_clear_error():
  class WithBatchNorm(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
      return nn.Dense(3)(nn.BatchNorm(use_running_average=not train)(x))

  import pytest

  with pytest.raises(ValueError, match='batch_stats.*GroupNorm'):
    fl.models.from_linen(WithBatchNorm(), SPEC)


def test_export_flax_variables_runs_in_plain_flax():
  x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
  linen_model = fl.models.from_linen(LinenMLP(), SPEC)
  weights = linen_model.init_fn(jax.random.key(1))
  variables = fl.models.export_flax_variables(weights)
  assert set(variables) == {'params'}
  assert all(isinstance(a, np.ndarray) for a in jax.tree.leaves(variables))
  np.testing.assert_array_equal(
      LinenMLP().apply(variables, x), linen_model.apply_fn(weights, x)
  )

  nnx_model = fl.models.from_nnx(NnxMLP, SPEC)
  weights = nnx_model.init_fn(jax.random.key(2))
  module = NnxMLP(nnx.Rngs(7))  # other weights, replaced by the exported ones
  _, params, _ = nnx.split(module, nnx.Param, ...)
  nnx.replace_by_pure_dict(params, fl.models.export_flax_variables(weights)['params'])
  nnx.update(module, params)
  np.testing.assert_allclose(module(x), nnx_model.apply_fn(weights, x), rtol=1e-6)
