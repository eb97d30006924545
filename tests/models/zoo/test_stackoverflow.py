"""TFF's StackOverflow models (fedjax_like/models/zoo/stackoverflow.py): sizes as published, the
special token ids, and each task's loss and metrics."""

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_like.models import zoo
from fedjax_like.models.zoo import stackoverflow


def count(model):
  weights = jax.eval_shape(model.init_fn, jax.random.key(0))
  return sum(int(np.prod(s.shape)) for s in jax.tree.leaves(weights.trainable))


def test_word_lstm_architecture():
  model = zoo.stackoverflow_word_lstm()
  vocab = 10_000 + 1 + 3  # words, one oov bucket, pad, bos, eos
  embed = vocab * 96
  lstm = 4 * 670 * (96 + 670 + 1)
  project = 670 * 96 + 96
  logits = 96 * vocab + vocab
  assert count(model) == embed + lstm + project + logits == 4_050_748
  assert model.num_outputs == 10_004 and model.input_spec[0].shape == (20,)
  assert set(model.metric_fns) == {
      'num_tokens', 'accuracy', 'accuracy_without_out_of_vocab',
      'accuracy_without_out_of_vocab_or_end_of_sentence'}


def test_special_tokens_and_masked_accuracies():
  assert stackoverflow.special_tokens(10, 2) == (0, [11, 12], 13, 14)
  model = zoo.stackoverflow_word_lstm(vocab_size=10, num_out_of_vocab_buckets=2,
                                      sequence_length=5, embedding_size=4, lstm_size=3)
  weights = jax.jit(model.init_fn)(jax.random.key(0))
  # Targets: words, an oov (11 and 12), eos (14) and padding.
  x = jnp.array([[13, 3, 11, 4, 14], [13, 12, 5, 14, 0]])
  y = jnp.array([[3, 11, 4, 14, 0], [12, 5, 14, 0, 0]])
  out = model.finalize_metrics(jax.jit(model.eval_sums)(weights, (x, y), jnp.array([True, True])))
  apply = jax.jit(model.apply_fn, static_argnums=(2, 3))
  predicted = np.asarray(apply(weights, x, None, False)).argmax(-1)
  y = np.asarray(y)

  def accuracy(excluded):
    keep = ~np.isin(y, excluded)
    return ((predicted == y) & keep).sum() / keep.sum()

  np.testing.assert_allclose(out['accuracy'], accuracy([0]), rtol=1e-6)
  np.testing.assert_allclose(out['accuracy_without_out_of_vocab'], accuracy([0, 11, 12]),
                             rtol=1e-6)
  np.testing.assert_allclose(out['accuracy_without_out_of_vocab_or_end_of_sentence'],
                             accuracy([0, 11, 12, 14]), rtol=1e-6)
  assert int(out['num_tokens']) == 7


def test_tag_logistic_regression_sums_its_loss_over_the_batch():
  model = zoo.stackoverflow_tag_lr()
  assert count(model) == 10_000 * 500 + 500 == 5_000_500
  assert model.loss_reduction == 'sum' and set(model.metric_fns) == {'precision', 'recall_at_5'}
  small = zoo.stackoverflow_tag_lr(word_vocab_size=6, tag_vocab_size=4)
  weights = small.init_fn(jax.random.key(0))
  rng = np.random.default_rng(0)
  x = rng.random((3, 6)).astype(np.float32)
  y = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]], np.float32)
  mask = np.array([True, True, False])
  objective, _ = small.batch_loss(weights, (x, y), jnp.asarray(mask))
  z = np.asarray(small.apply_fn(weights, x, None, False), np.float64)
  p = 1 / (1 + np.exp(-z))
  per_example = np.mean(-y * np.log(p) - (1 - y) * np.log(1 - p), axis=1)
  np.testing.assert_allclose(objective, per_example[mask].sum(), rtol=1e-5)
