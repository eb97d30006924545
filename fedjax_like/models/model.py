"""A model as pure functions: init, apply, a loss and metrics, all carried as sums over batches.

Nothing here holds a module object: :class:`Model` is a frozen bundle of pure functions, built once
at the boundary (see :mod:`fedjax_like.models.flax`), so a round can be jitted and vmapped freely.

Weights are :class:`ModelWeights` ``(trainable, non_trainable)`` as in TFF. A batch is an ``(x, y)``
pair or a dict with keys ``'x'`` and ``'y'``; a boolean ``mask[batch]`` marks real examples.

**Metrics are sums divided once.** Within a round every batch adds its sums to a running total
(over steps, then over clients); only the final total is divided (:meth:`Model.finalize_metrics`),
so padding and ragged batches never bias a metric. A metric function ``(outputs, y) -> value``
returns one of:

- ``[batch]`` per-example values: summed over the real examples and divided by ``num_examples``
  (``accuracy``: correct examples / examples);
- a :class:`Metric` ``(total[batch], weight[batch])``: its own denominator. The sum of ``total``
  is divided by the sum of ``weight`` (per-token accuracy: correct tokens / counted tokens; a
  padding token has weight 0 and counts nowhere). The sums are carried as a ``Metric`` pair;
- a :class:`Metric` ``(total[batch], None)``: a count, reported as its sum (``num_tokens``).

The loss works the same way. ``loss_fn(outputs, y)`` returns per-example losses ``[batch]`` or a
``Metric(total[batch], weight[batch])`` (a sequence model's summed token losses and counted
tokens), and ``loss_reduction`` names Keras's reduction of a batch, as TFF's Keras models use it:

- ``'sum_over_batch_size'`` (default): the batch objective is ``sum(total) / sum(weight)`` over
  the real examples (``weight`` = 1 per example for ``[batch]`` losses): the mean loss per example,
  or per counted token;
- ``'sum'``: the batch objective is ``sum(total)`` (TFF's StackOverflow tag task).

Training differentiates the batch objective plus ``regularizer(trainable)`` when one is given
(Keras's layer regularization losses, which TFF adds to the loss it differentiates). The reported
``loss`` is TFF's: each batch's objective (without the regularizer) weighted by its number of
examples, ``sum_b n_b L_b / sum_b n_b``. For a per-example loss under the default reduction that is
exactly the mean per-example loss; for a token-weighted or summed loss it depends on how examples
are batched, as TFF's number does.

The sums a model produces (:meth:`Model.zero_sums` has their structure) are
``{'loss': (), <metric>: () or Metric((), ()) or Metric((), None), 'num_examples': ()}``, float32.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_like.core import tree

PyTree = Any
Array = jax.Array

LOSS_REDUCTIONS = ('sum_over_batch_size', 'sum')


class ModelWeights(NamedTuple):
  """The model's weights: ``trainable`` (trained by clients) and ``non_trainable`` (kept)."""

  trainable: PyTree
  non_trainable: PyTree


class Metric(NamedTuple):
  """A metric value with its own denominator (see the module docstring).

  Attributes:
    total: per-example sums ``[batch]`` (in a metric's running sums: a scalar).
    weight: per-example denominators ``[batch]`` (a scalar in the sums), or None for a count that
      is reported as its sum.
  """

  total: Array
  weight: Array | None = None


def softmax_cross_entropy(logits: Array, labels: Array) -> Array:
  """Per-example cross-entropy ``[batch]`` of integer ``labels`` under ``softmax(logits)``."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))


def accuracy(logits: Array, labels: Array) -> Array:
  """Per-example correctness ``[batch]`` (1.0 where ``argmax(logits) == label``)."""
  return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def split_batch(batch: PyTree) -> tuple[PyTree, Array]:
  """``(x, y)`` from an ``(x, y)`` pair or a ``{'x', 'y'}`` dict."""
  if isinstance(batch, Mapping):
    missing = {'x', 'y'} - set(batch)
    if missing:
      raise KeyError(
          f'A dict batch needs keys "x" and "y"; missing {sorted(missing)} in {sorted(batch)}. '
          'Map your examples to (x, y) pairs, e.g. .map(lambda e: (e["pixels"], e["label"])).'
      )
    return batch['x'], batch['y']
  if isinstance(batch, (tuple, list)) and len(batch) == 2:
    return batch[0], batch[1]
  raise TypeError(f'A batch must be an (x, y) pair or a dict with "x" and "y"; got {type(batch)}.')


def _masked_sum(values: Array, mask_f: Array) -> Array:
  return jnp.sum(values * mask_f)


def _batch_sum(value, mask_f: Array):
  """The sum over a batch's real examples of a metric fn's value (``[B]`` or a Metric)."""
  if isinstance(value, Metric):
    weight = None if value.weight is None else _masked_sum(value.weight, mask_f)
    return Metric(_masked_sum(value.total, mask_f), weight)
  return _masked_sum(value, mask_f)


def _check_metric_value(name: str, value, batch_size: int) -> None:
  if isinstance(value, Metric):
    parts = [value.total] if value.weight is None else [value.total, value.weight]
  else:
    parts = [value]
  for part in parts:
    if getattr(part, 'shape', None) != (batch_size,):
      raise ValueError(
          f'Metric {name!r} must return per-example values of shape [batch] = ({batch_size},) '
          f'(or a Metric(total, weight) of such arrays); got shape {getattr(part, "shape", part)}.'
          ' Reduce any other axis (e.g. tokens) inside the metric function.'
      )


def _finalize_one(value, count):
  if isinstance(value, Metric):
    if value.weight is None:
      return jnp.round(value.total).astype(jnp.int32)
    return tree.divide_by_total(value.total, value.weight)
  return tree.divide_by_total(value, count)


@dataclasses.dataclass(frozen=True)
class Model:
  """A model as pure functions.

  Attributes:
    init_fn: ``rng -> ModelWeights``.
    apply_fn: ``(weights: ModelWeights, x[batch, ...], rng | None, train: bool) ->
      outputs[batch, ...]``.
    loss_fn: ``(outputs, y) -> per-example loss [batch]`` or
      ``Metric(total[batch], weight[batch])``.
    metric_fns: ``{name: (outputs, y) -> [batch] | Metric}`` (see the module docstring). ``loss``
      and ``num_examples`` are always reported.
    input_spec: one example's ``(x, y)`` as ``jax.ShapeDtypeStruct`` (no batch axis).
    loss_reduction: ``'sum_over_batch_size'`` (the mean) or ``'sum'``: how a batch's losses make
      the objective that is differentiated (Keras's reduction names).
    regularizer: ``trainable -> scalar`` added to the objective in training only (not to the
      reported loss), or None.
  """

  init_fn: Callable[[Array], ModelWeights]
  apply_fn: Callable[..., Array]
  input_spec: tuple[Any, Any]
  loss_fn: Callable[[Array, Array], Any] = softmax_cross_entropy
  metric_fns: Mapping[str, Callable[[Array, Array], Any]] = dataclasses.field(
      default_factory=lambda: {'accuracy': accuracy}
  )
  loss_reduction: str = 'sum_over_batch_size'
  regularizer: Callable[[PyTree], Array] | None = None

  def __post_init__(self):
    if self.loss_reduction not in LOSS_REDUCTIONS:
      raise ValueError(
          f'loss_reduction must be one of {LOSS_REDUCTIONS}; got {self.loss_reduction!r}.'
      )
    reserved = {'loss', 'num_examples', 'num_batches'} & set(self.metric_fns)
    if reserved:
      raise ValueError(
          f'Metric names {sorted(reserved)} are reserved (always reported); rename the metric.'
      )

  @functools.cached_property
  def num_outputs(self) -> int:
    """The size of the last output axis (the number of classes for a classifier); traced once."""
    x_spec, _ = self.input_spec
    weights = jax.eval_shape(self.init_fn, jax.random.key(0))
    x = jax.tree.map(lambda s: jax.ShapeDtypeStruct((1,) + tuple(s.shape), s.dtype), x_spec)
    out = jax.eval_shape(lambda w, xb: self.apply_fn(w, xb, None, False), weights, x)
    return int(out.shape[-1])

  def _loss_terms(self, outputs, y, mask_f: Array) -> tuple[Array, Array]:
    """``(objective, reported)``: the batch's reduced loss (differentiable) and what it adds to
    the ``loss`` sum (TFF's ``n_b * L_b``; exactly ``sum_i l_i`` for per-example mean losses)."""
    count = jnp.sum(mask_f)
    losses = self.loss_fn(outputs, y)
    if isinstance(losses, Metric):
      total = _masked_sum(losses.total, mask_f)
      weight = count if losses.weight is None else _masked_sum(losses.weight, mask_f)
    else:
      total, weight = _masked_sum(losses, mask_f), None
    if self.loss_reduction == 'sum':
      objective = total
    elif weight is None:
      return total / jnp.maximum(count, 1.0), jax.lax.stop_gradient(total)
    else:
      objective = total / jnp.where(weight > 0, weight, 1.0)
    return objective, jax.lax.stop_gradient(objective) * count

  def batch_loss(
      self, weights: ModelWeights, batch: PyTree, mask: Array, rng: Array | None = None
  ) -> tuple[Array, dict[str, Any]]:
    """The training objective of a batch (what is differentiated) and the batch's metric sums.

    Args:
      weights: the model's weights.
      batch: ``(x[B, ...], y[B, ...])``.
      mask: bool ``[B]``; an all-False mask gives objective 0 (and zero gradients from the loss).
      rng: a key for stochastic layers, or None.

    Returns:
      ``(objective, sums)``: ``objective`` is the reduced loss (plus the regularizer), ``sums`` as
      :meth:`zero_sums`.
    """
    x, y = split_batch(batch)
    outputs = self.apply_fn(weights, x, rng, True)
    objective, reported = self._loss_terms(outputs, y, mask.astype(jnp.float32))
    sums = self._sums(outputs, y, reported, mask)
    if self.regularizer is not None:
      # Scaled by 0 on a batch without real examples, so padding stays inert.
      objective = objective + jnp.any(mask) * self.regularizer(weights.trainable)
    return objective, sums

  def eval_sums(self, weights: ModelWeights, batch: PyTree, mask: Array) -> dict[str, Any]:
    """Metric sums of a batch evaluated with ``weights`` (inference mode)."""
    x, y = split_batch(batch)
    outputs = self.apply_fn(weights, x, None, False)
    _, reported = self._loss_terms(outputs, y, mask.astype(jnp.float32))
    return self._sums(outputs, y, reported, mask)

  def _sums(self, outputs, y, reported_loss, mask) -> dict[str, Any]:
    mask_f = mask.astype(jnp.float32)
    outputs = jax.lax.stop_gradient(outputs)
    sums = {'loss': reported_loss}
    for name, fn in self.metric_fns.items():
      value = fn(outputs, y)
      _check_metric_value(name, value, mask.shape[0])
      sums[name] = _batch_sum(value, mask_f)
    sums['num_examples'] = jnp.sum(mask_f)
    return sums

  @functools.cached_property
  def _sums_structure(self) -> PyTree:
    x_spec, y_spec = self.input_spec
    batch = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct((1,) + tuple(s.shape), s.dtype), (x_spec, y_spec)
    )
    weights = jax.eval_shape(self.init_fn, jax.random.key(0))
    return jax.eval_shape(
        lambda w, b: self.eval_sums(w, b, jnp.ones((1,), bool)), weights, batch
    )

  def zero_sums(self) -> dict[str, Any]:
    """Sums of no examples: ``{'loss', <metrics>, 'num_examples'}``, a float32 zero per leaf
    (a :class:`Metric` pair for metrics with their own denominator)."""
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), self._sums_structure)

  @staticmethod
  def finalize_metrics(sums: Mapping[str, Any]) -> dict[str, Array]:
    """Divides each metric's sum once: a :class:`Metric` pair by its own weight, a count as is
    (int32), any other sum by ``num_examples`` (reported as int32)."""
    count = sums['num_examples']
    out = {}
    for name, value in sums.items():
      if name != 'num_examples':
        out[name] = _finalize_one(value, count)
    out['num_examples'] = count.astype(jnp.int32) if hasattr(count, 'astype') else count
    return out
