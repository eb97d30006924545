"""A model as pure functions: init, apply, per-example loss and metrics, summed over batches.

Nothing here holds a module object: :class:`Model` is a frozen bundle of pure functions, built once
at the boundary (see :mod:`fedjax_like.models.flax`), so a round can be jitted and vmapped freely.

Weights are :class:`ModelWeights` ``(trainable, non_trainable)`` as in TFF. A batch is an ``(x, y)``
pair or a dict with keys ``'x'`` and ``'y'``; a boolean ``mask[batch]`` marks real examples.
Metrics are carried as *sums* (``loss`` sum, ``accuracy`` = correct count, ``num_examples``) and
divided once at the end (:meth:`Model.finalize_metrics`), so padding and ragged batches never bias
them, and sums from many batches and clients simply add.
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


class ModelWeights(NamedTuple):
  """The model's weights: ``trainable`` (trained by clients) and ``non_trainable`` (kept)."""

  trainable: PyTree
  non_trainable: PyTree


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


@dataclasses.dataclass(frozen=True)
class Model:
  """A model as pure functions.

  Attributes:
    init_fn: ``rng -> ModelWeights``.
    apply_fn: ``(weights: ModelWeights, x[batch, ...], rng | None, train: bool) -> outputs[batch, C]``.
    loss_fn: ``(outputs, y) -> per-example loss [batch]``.
    metric_fns: ``{name: (outputs, y) -> per-example value [batch]}``; reported as the mean over
      examples. ``loss`` is always included.
    input_spec: one example's ``(x, y)`` as ``jax.ShapeDtypeStruct`` (no batch axis).
  """

  init_fn: Callable[[Array], ModelWeights]
  apply_fn: Callable[..., Array]
  input_spec: tuple[Any, Any]
  loss_fn: Callable[[Array, Array], Array] = softmax_cross_entropy
  metric_fns: Mapping[str, Callable[[Array, Array], Array]] = dataclasses.field(
      default_factory=lambda: {'accuracy': accuracy}
  )

  @functools.cached_property
  def num_outputs(self) -> int:
    """The size of the last output axis (the number of classes for a classifier); traced once."""
    x_spec, _ = self.input_spec
    weights = jax.eval_shape(self.init_fn, jax.random.key(0))
    x = jax.tree.map(lambda s: jax.ShapeDtypeStruct((1,) + tuple(s.shape), s.dtype), x_spec)
    out = jax.eval_shape(lambda w, xb: self.apply_fn(w, xb, None, False), weights, x)
    return int(out.shape[-1])

  def batch_loss(
      self, weights: ModelWeights, batch: PyTree, mask: Array, rng: Array | None = None
  ) -> tuple[Array, dict[str, Array]]:
    """The mean training loss over the real examples of a batch, and the batch's metric sums.

    Args:
      weights: the model's weights.
      batch: ``(x[B, ...], y[B])``.
      mask: bool ``[B]``; an all-False mask gives loss 0 (and zero gradients).
      rng: a key for stochastic layers, or None.

    Returns:
      ``(mean_loss, sums)`` with ``sums = {'loss': .., <metric>: .., 'num_examples': ..}``.
    """
    x, y = split_batch(batch)
    outputs = self.apply_fn(weights, x, rng, True)
    mask_f = mask.astype(jnp.float32)
    count = jnp.sum(mask_f)
    per_example = self.loss_fn(outputs, y)
    mean_loss = jnp.sum(per_example * mask_f) / jnp.maximum(count, 1.0)
    return mean_loss, self._sums(outputs, y, per_example, mask_f)

  def eval_sums(self, weights: ModelWeights, batch: PyTree, mask: Array) -> dict[str, Array]:
    """Metric sums of a batch evaluated with ``weights`` (inference mode)."""
    x, y = split_batch(batch)
    outputs = self.apply_fn(weights, x, None, False)
    return self._sums(outputs, y, self.loss_fn(outputs, y), mask.astype(jnp.float32))

  def _sums(self, outputs, y, per_example_loss, mask_f) -> dict[str, Array]:
    sums = {'loss': jnp.sum(jax.lax.stop_gradient(per_example_loss) * mask_f)}
    for name, fn in self.metric_fns.items():
      sums[name] = jnp.sum(fn(jax.lax.stop_gradient(outputs), y) * mask_f)
    sums['num_examples'] = jnp.sum(mask_f)
    return sums

  def zero_sums(self) -> dict[str, Array]:
    names = ['loss', *self.metric_fns, 'num_examples']
    return {name: jnp.zeros((), jnp.float32) for name in names}

  @staticmethod
  def finalize_metrics(sums: Mapping[str, Array]) -> dict[str, Array]:
    """Divides each metric sum by ``num_examples`` once; ``num_examples`` is reported as is."""
    count = sums['num_examples']
    out = tree.divide_by_total({k: v for k, v in sums.items() if k != 'num_examples'}, count)
    out['num_examples'] = count.astype(jnp.int32) if hasattr(count, 'astype') else count
    return out
