"""Losses and metrics of TFF's baseline tasks, as per-example values for :class:`Model`.

Each function here returns ``[batch]`` values or a :class:`~fedjax_like.models.model.Metric`
``(total[batch], weight[batch] | None)`` (see :mod:`fedjax_like.models.model`): a model sums
them over the real examples of every batch and client and divides once, so a per-token metric is
divided by the number of tokens it counted, and padding never counts.

Sequence metrics (next-character and next-word prediction; ``logits[B, T, V]``, ``y[B, T]``),
as ``tff.simulation.baselines.keras_metrics``:

- :func:`masked_categorical_accuracy` ``(masked_tokens)``: ``argmax(logits) == y`` over the
  positions whose target is none of ``masked_tokens`` (TFF's ``MaskedCategoricalAccuracy``);
- :func:`num_tokens` ``(masked_tokens)``: the count of such positions (``NumTokensCounter``);
- :func:`masked_sequence_cross_entropy` ``(mask)``: the token cross-entropy summed over the
  positions TFF's loss counts, with their count as the weight, so the batch objective is the
  mean over those tokens (Keras's masked ``SUM_OVER_BATCH_SIZE``).

Multi-label metrics (tag prediction; ``logits[B, L]``, ``y[B, L]`` multi-hot; the probability of a
label is ``sigmoid(logit)``, as TFF's ``Dense(activation='sigmoid')`` outputs it):

- :func:`sigmoid_binary_cross_entropy`: Keras's ``binary_crossentropy`` on a sigmoid output, the
  mean over labels of ``-y log p - (1 - y) log(1 - p)`` computed from the logits;
- :func:`precision` ``(threshold=0.5)``: true positives / predicted positives, a label predicted
  when ``p > threshold`` (``tf.keras.metrics.Precision()``);
- :func:`recall_at_k` ``(k=5)``: true positives / positives, the predicted labels being the ``k``
  largest ``p`` of each example, ties to the lower index (``tf.keras.metrics.Recall(top_k=5)``).
  A label counts as positive where ``y != 0``, as Keras casts labels to bool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from fedjax_like.models.model import Metric

Array = jax.Array
SEQUENCE_LOSS_MASKS = ('inputs', 'targets', 'none')


def _per_example(values: Array) -> Array:
  """Sums every axis but the first: ``[B, ...] -> [B]``."""
  return jnp.sum(values.reshape(values.shape[0], -1), axis=1)


def _token_weights(y: Array, masked_tokens: Sequence[int]) -> Array:
  weights = jnp.ones(y.shape, jnp.float32)
  for token in masked_tokens:
    weights = weights * (y != token)
  return weights


def masked_categorical_accuracy(masked_tokens: Sequence[int] = ()) -> Callable[..., Metric]:
  """TFF's ``MaskedCategoricalAccuracy``: correct / counted targets, a target counted unless it is
  one of ``masked_tokens``.

  Returns:
    ``fn(logits[B, ..., V], y[B, ...]) -> Metric(correct[B], counted[B])``.
  """
  masked = tuple(int(t) for t in masked_tokens)

  def fn(logits: Array, y: Array) -> Metric:
    weights = _token_weights(y, masked)
    correct = (jnp.argmax(logits, axis=-1) == y) * weights
    return Metric(_per_example(correct), _per_example(weights))

  return fn


def num_tokens(masked_tokens: Sequence[int] = ()) -> Callable[..., Metric]:
  """TFF's ``NumTokensCounter``: the number of targets that are none of ``masked_tokens``.

  Returns:
    ``fn(logits, y[B, ...]) -> Metric(counted[B], None)`` (a count, reported as an int32 sum).
  """
  masked = tuple(int(t) for t in masked_tokens)

  def fn(logits: Array, y: Array) -> Metric:
    del logits
    return Metric(_per_example(_token_weights(y, masked)), None)

  return fn


def sequence_loss_mask(y: Array, mask: str = 'inputs', pad_token: int = 0) -> Array:
  """float32 ``[B, T]``: the positions a next-token loss counts.

  Args:
    y: int ``[B, T]`` targets, ``y[:, t] = x[:, t + 1]`` (both cut from one padded row, as TFF's
      preprocessing makes them).
    mask: ``'inputs'``: where the input token is not ``pad_token``, TFF's loss since Keras 2.11
      (its embedding has ``mask_zero=True`` and Keras applies the propagated mask to the loss).
      Because ``x[:, t] = y[:, t - 1]`` and ``x[:, 0]`` is never padding (bos, or a row's first
      character), it is ``[1, y[:, :-1] != pad]``: one more position than the targets, where the
      input is the end of sentence and the target padding. ``'targets'``: where the target is
      not ``pad_token``. ``'none'``: every position, pads included (the reduction of Keras before
      late 2022, which did not apply the mask to a loss called directly, as in the paper's runs).
    pad_token: the padding id.
  """
  if mask == 'targets':
    return (y != pad_token).astype(jnp.float32)
  if mask == 'none':
    return jnp.ones(y.shape, jnp.float32)
  if mask == 'inputs':
    first = jnp.ones(y.shape[:1] + (1,), jnp.float32)
    return jnp.concatenate([first, (y[:, :-1] != pad_token).astype(jnp.float32)], axis=1)
  raise ValueError(f'mask must be one of {SEQUENCE_LOSS_MASKS}; got {mask!r}.')


def masked_sequence_cross_entropy(
    mask: str = 'inputs', pad_token: int = 0
) -> Callable[..., Metric]:
  """Token cross-entropy over the positions :func:`sequence_loss_mask` counts.

  Returns:
    ``fn(logits[B, T, V], y[B, T]) -> Metric(summed_loss[B], counted[B])``; under the default
    ``'sum_over_batch_size'`` reduction the batch objective is the mean over counted tokens.
  """
  if mask not in SEQUENCE_LOSS_MASKS:
    raise ValueError(f'mask must be one of {SEQUENCE_LOSS_MASKS}; got {mask!r}.')

  def fn(logits: Array, y: Array) -> Metric:
    weights = sequence_loss_mask(y, mask, pad_token)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, y.astype(jnp.int32))
    return Metric(_per_example(losses * weights), _per_example(weights))

  return fn


def sigmoid_binary_cross_entropy(logits: Array, labels: Array) -> Array:
  """``[B]``: the mean over labels of the binary cross-entropy of ``sigmoid(logits)``, computed
  stably from the logits (Keras's ``binary_crossentropy`` on a sigmoid layer's output)."""
  labels = labels.astype(logits.dtype)
  losses = jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  return jnp.mean(losses.reshape(losses.shape[0], -1), axis=1)


def precision(threshold: float = 0.5) -> Callable[..., Metric]:
  """``tf.keras.metrics.Precision(thresholds=threshold)`` on ``sigmoid(logits)``.

  Returns:
    ``fn(logits[B, L], y[B, L]) -> Metric(true_positives[B], predicted_positives[B])``.
  """

  def fn(logits: Array, y: Array) -> Metric:
    predicted = jax.nn.sigmoid(logits) > threshold
    true_positive = predicted & (y != 0)
    return Metric(_per_example(true_positive.astype(jnp.float32)),
                  _per_example(predicted.astype(jnp.float32)))

  return fn


def recall_at_k(k: int = 5) -> Callable[..., Metric]:
  """``tf.keras.metrics.Recall(top_k=k)`` on ``sigmoid(logits)``.

  Returns:
    ``fn(logits[B, L], y[B, L]) -> Metric(true_positives[B], positives[B])``.
  """
  if k < 1:
    raise ValueError(f'k must be a positive integer; got {k}.')

  def fn(logits: Array, y: Array) -> Metric:
    probabilities = jax.nn.sigmoid(logits)
    _, top = jax.lax.top_k(probabilities, min(k, probabilities.shape[-1]))  # k > L: all.
    predicted = jnp.sum(jax.nn.one_hot(top, probabilities.shape[-1], dtype=jnp.float32), axis=-2)
    positive = (y != 0).astype(jnp.float32)
    return Metric(_per_example(predicted * positive), _per_example(positive))

  return fn
