"""TFF's baseline losses and metrics (fedjax_like/models/metrics.py), against NumPy
re-derivations of the Keras/TFF definitions written here."""

import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_like.models import metrics

rng = np.random.default_rng(0)


def sequences(batch=5, length=6, vocab=9):
  """Right-padded rows cut from [bos, words..., eos?, pad...] as TFF's preprocessing cuts them."""
  rows = np.zeros((batch, length + 1), np.int64)
  for i in range(batch):
    n = rng.integers(0, length + 1)
    tokens = [vocab - 2] + list(rng.integers(1, vocab - 2, size=n))
    if n < length:
      tokens.append(vocab - 1)  # eos only when the sentence was not truncated
    rows[i, : len(tokens)] = tokens
  logits = rng.normal(size=(batch, length, vocab)).astype(np.float32)
  return rows[:, :-1], rows[:, 1:], logits


def test_masked_accuracy_and_num_tokens():
  _, y, logits = sequences()
  logits[0, 0] = 0.0  # A tie: argmax picks the first index, as Keras's.
  for masked in ([0], [0, 8], [0, 8, 3]):
    acc = metrics.masked_categorical_accuracy(masked)(jnp.asarray(logits), jnp.asarray(y))
    keep = ~np.isin(y, masked)
    correct = (logits.argmax(-1) == y) & keep
    np.testing.assert_array_equal(acc.total, correct.sum(1))
    np.testing.assert_array_equal(acc.weight, keep.sum(1))
    count = metrics.num_tokens(masked)(jnp.asarray(logits), jnp.asarray(y))
    np.testing.assert_array_equal(count.total, keep.sum(1))
    assert count.weight is None


def test_input_mask_is_the_keras_mask_of_the_inputs():
  for seed in range(5):
    global rng
    rng = np.random.default_rng(seed)
    x, y, _ = sequences(batch=8, length=4)
    np.testing.assert_array_equal(metrics.sequence_loss_mask(jnp.asarray(y), 'inputs'), x != 0)
    np.testing.assert_array_equal(metrics.sequence_loss_mask(jnp.asarray(y), 'targets'), y != 0)
    assert np.all(metrics.sequence_loss_mask(jnp.asarray(y), 'none') == 1)
  with pytest.raises(ValueError, match='mask must be one of'):
    metrics.masked_sequence_cross_entropy('pads')


@pytest.mark.parametrize('mask', ['inputs', 'targets', 'none'])
def test_sequence_cross_entropy(mask):
  x, y, logits = sequences()
  out = metrics.masked_sequence_cross_entropy(mask)(jnp.asarray(logits), jnp.asarray(y))
  z = logits.astype(np.float64)
  log_probs = z - z.max(-1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
  nll = -np.take_along_axis(log_probs, y[..., None], -1)[..., 0]
  weights = {'inputs': x != 0, 'targets': y != 0, 'none': np.ones_like(y, bool)}[mask]
  np.testing.assert_allclose(out.total, (nll * weights).sum(1), rtol=1e-5)
  np.testing.assert_array_equal(out.weight, weights.sum(1))


def test_sigmoid_binary_cross_entropy():
  logits = rng.normal(scale=3, size=(4, 7)).astype(np.float32)
  labels = (rng.random((4, 7)) < 0.3).astype(np.float32)
  labels[0, 0] = 2.0  # A tag listed twice counts twice in TFF's multi-hot sum.
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  expected = np.mean(-labels * np.log(p) - (1 - labels) * np.log(1 - p), axis=1)
  out = metrics.sigmoid_binary_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_precision_at_half():
  logits = rng.normal(size=(6, 10)).astype(np.float32)
  logits[0, :3] = [0.0, 1e-9, -1e-9]  # sigmoid exactly 0.5 is not > 0.5.
  labels = (rng.random((6, 10)) < 0.4).astype(np.float32)
  labels[1, 2] = 2.0
  out = metrics.precision()(jnp.asarray(logits), jnp.asarray(labels))
  predicted = 1 / (1 + np.exp(-logits.astype(np.float32))) > 0.5
  np.testing.assert_array_equal(out.total, (predicted & (labels != 0)).sum(1))
  np.testing.assert_array_equal(out.weight, predicted.sum(1))


def test_recall_at_5_with_ties_to_the_lower_index():
  logits = rng.normal(size=(5, 12)).astype(np.float32)
  logits[0] = 30.0  # sigmoid saturates to 1.0 everywhere: the top 5 are indices 0-4.
  logits[1, [2, 7, 9]] = 0.25  # Exact ties among the largest.
  logits[1, [0, 1]] = 5.0
  labels = (rng.random((5, 12)) < 0.4).astype(np.float32)
  labels[0, [3, 8]] = 1.0
  probs = (1 / (1 + np.exp(-logits))).astype(np.float32)
  top = np.argsort(-probs, axis=1, kind='stable')[:, :5]
  predicted = np.zeros_like(labels, bool)
  np.put_along_axis(predicted, top, True, axis=1)
  out = metrics.recall_at_k(5)(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_array_equal(out.total, (predicted & (labels != 0)).sum(1))
  np.testing.assert_array_equal(out.weight, (labels != 0).sum(1))
  assert out.total[0] == labels[0, :5].sum()
  with pytest.raises(ValueError, match='k must be a positive'):
    metrics.recall_at_k(0)
