"""Model (fedjax_like/models/model.py): metric sums with their own denominators, the loss
reductions, TFF's reported loss, the regularizer, and inert padding, against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_like.models import metrics
from fedjax_like.models.model import Metric, Model, ModelWeights

B, T, V = 4, 5, 6


def bias_model(loss_fn, metric_fns, loss_reduction='sum_over_batch_size', regularizer=None):
  """logits = x + b with a trainable bias b[V]: x[B, T, V] float32, y[B, T] int32."""
  return Model(
      init_fn=lambda rng: ModelWeights({'b': jnp.zeros((V,))}, {}),
      apply_fn=lambda w, x, rng=None, train=False: x + w.trainable['b'],
      input_spec=(jax.ShapeDtypeStruct((T, V), jnp.float32), jax.ShapeDtypeStruct((T,), jnp.int32)),
      loss_fn=loss_fn,
      metric_fns=metric_fns,
      loss_reduction=loss_reduction,
      regularizer=regularizer,
  )


def random_batch(seed, pad_from=None):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(B, T, V)).astype(np.float32)
  y = rng.integers(1, V, size=(B, T)).astype(np.int32)
  lengths = rng.integers(1, T + 1, size=B) if pad_from is None else pad_from
  for i, n in enumerate(lengths):
    y[i, n:] = 0  # Right padding, as TFF's sequences.
  return x, y


def np_log_softmax(z):
  z = z.astype(np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def token_model(**kwargs):
  return bias_model(
      metrics.masked_sequence_cross_entropy('targets'),
      {'accuracy': metrics.masked_categorical_accuracy([0]),
       'num_tokens': metrics.num_tokens([0]),
       'first_correct': lambda logits, y: (jnp.argmax(logits[:, 0], -1) == y[:, 0]) * 1.0},
      **kwargs,
  )


def test_metrics_are_divided_by_their_own_weight_and_padding_is_inert():
  model = token_model()
  w = model.init_fn(jax.random.key(0))
  batches = [random_batch(1), random_batch(2)]
  masks = [np.array([True, True, True, False]), np.array([True, False, False, False])]
  total = model.zero_sums()
  for (x, y), mask in zip(batches, masks, strict=True):
    x, y = x.copy(), y.copy()
    x[~mask], y[~mask] = 1e6, 3  # Garbage in padding rows must change nothing.
    total = jax.tree.map(jnp.add, total, model.eval_sums(w, (x, y), jnp.asarray(mask)))
  out = Model.finalize_metrics(total)

  correct = counted = first = examples = 0
  losses_by_batch = []
  for (x, y), mask in zip(batches, masks, strict=True):
    x, y = x[mask], y[mask]
    real = y != 0
    correct += np.sum((x.argmax(-1) == y) & real)
    counted += real.sum()
    first += np.sum(x[:, 0].argmax(-1) == y[:, 0])
    examples += len(y)
    nll = -np.take_along_axis(np_log_softmax(x), y[..., None], -1)[..., 0]
    losses_by_batch.append((len(y), (nll * real).sum() / real.sum()))
  np.testing.assert_allclose(out['accuracy'], correct / counted, rtol=1e-6)
  assert out['num_tokens'] == counted and out['num_tokens'].dtype == jnp.int32
  np.testing.assert_allclose(out['first_correct'], first / examples, rtol=1e-6)
  assert out['num_examples'] == examples == 4
  # TFF's reported loss: each batch's token mean, weighted by the batch's examples.
  expected_loss = sum(n * loss for n, loss in losses_by_batch) / sum(n for n, _ in losses_by_batch)
  np.testing.assert_allclose(out['loss'], expected_loss, rtol=1e-5)
  assert jax.tree.structure(total) == jax.tree.structure(model.zero_sums())
  assert isinstance(total['accuracy'], Metric) and total['num_tokens'].weight is None


def test_gradient_is_the_mean_over_real_tokens_of_the_batch():
  model = token_model()
  w = model.init_fn(jax.random.key(0))
  x, y = random_batch(3)
  mask = np.array([True, True, False, True])
  grad = jax.grad(lambda p: model.batch_loss(ModelWeights(p, {}), (x, y), jnp.asarray(mask))[0])(
      w.trainable)['b']
  probs = np.exp(np_log_softmax(x[mask]))
  onehot = np.eye(V)[y[mask]]
  real = (y[mask] != 0)[..., None]
  expected = ((probs - onehot) * real).sum((0, 1)) / real.sum()
  np.testing.assert_allclose(grad, expected, atol=1e-6)


def test_sum_reduction_objective_and_reported_loss():
  per_example = lambda logits, y: jnp.sum(logits[:, :, 0], axis=1)  # noqa: E731
  model = bias_model(per_example, {}, loss_reduction='sum')
  w = model.init_fn(jax.random.key(0))
  (x1, y1), (x2, y2) = random_batch(4), random_batch(5)
  m1, m2 = np.array([1, 1, 1, 0], bool), np.array([1, 1, 0, 0], bool)
  objective, sums1 = model.batch_loss(w, (x1, y1), jnp.asarray(m1))
  s1 = x1[m1, :, 0].sum()
  np.testing.assert_allclose(objective, s1, rtol=1e-5)
  sums2 = model.eval_sums(w, (x2, y2), jnp.asarray(m2))
  out = Model.finalize_metrics(jax.tree.map(jnp.add, sums1, sums2))
  s2 = x2[m2, :, 0].sum()
  np.testing.assert_allclose(out['loss'], (3 * s1 + 2 * s2) / 5, rtol=1e-5)


def test_per_example_loss_keeps_the_exact_example_mean():
  model = bias_model(lambda logits, y: logits[:, 0, 0] ** 2, {})
  w = model.init_fn(jax.random.key(0))
  x, y = random_batch(6)
  mask = np.array([True, False, True, True])
  objective, sums = model.batch_loss(w, (x, y), jnp.asarray(mask))
  values = x[mask, 0, 0].astype(np.float64) ** 2
  np.testing.assert_allclose(objective, values.mean(), rtol=1e-6)
  np.testing.assert_allclose(sums['loss'], values.sum(), rtol=1e-6)


def test_regularizer_is_trained_on_but_not_reported_and_off_without_examples():
  reg = lambda params: 0.5 * jnp.sum(params['b'] ** 2) + 3.0  # noqa: E731
  model = token_model(regularizer=reg)
  plain = token_model()
  w = ModelWeights({'b': jnp.arange(V, dtype=jnp.float32)}, {})
  x, y = random_batch(7)
  mask = jnp.ones((B,), bool)
  objective, sums = model.batch_loss(w, (x, y), mask)
  plain_objective, plain_sums = plain.batch_loss(w, (x, y), mask)
  np.testing.assert_allclose(objective, plain_objective + 0.5 * np.sum(np.arange(V) ** 2) + 3,
                             rtol=1e-6)
  np.testing.assert_allclose(sums['loss'], plain_sums['loss'])
  empty, _ = model.batch_loss(w, (x, y), jnp.zeros((B,), bool))
  assert float(empty) == 0.0


def test_a_metric_weight_of_zero_gives_zero_and_counts_sum():
  sums = {'m': Metric(jnp.float32(0), jnp.float32(0)), 'c': Metric(jnp.float32(7), None),
          'num_examples': jnp.float32(0), 'loss': jnp.float32(0)}
  out = Model.finalize_metrics(sums)
  assert float(out['m']) == 0.0 and int(out['c']) == 7 and int(out['num_examples']) == 0


def test_bad_metric_shape_and_bad_reduction_are_named():
  model = bias_model(metrics.masked_sequence_cross_entropy(), {'per_token': lambda lo, y: y * 1.0})
  w = model.init_fn(jax.random.key(0))
  x, y = random_batch(8)
  with pytest.raises(ValueError, match="Metric 'per_token' must return per-example values"):
    model.eval_sums(w, (x, y), jnp.ones((B,), bool))
  with pytest.raises(ValueError, match='loss_reduction must be one of'):
    bias_model(metrics.masked_sequence_cross_entropy(), {}, loss_reduction='mean')
  with pytest.raises(ValueError, match='reserved'):
    bias_model(metrics.masked_sequence_cross_entropy(), {'num_examples': lambda lo, y: y})
