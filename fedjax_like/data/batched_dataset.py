"""A client's batches as fixed-shape arrays plus a mask: what ``Dataset.batch`` returns.

:class:`BatchedDataset` holds ``batches`` (a pytree of ``[num_batches, batch_size, ...]`` arrays)
and ``mask[num_batches, batch_size]`` (False marks padding in short batches), the form a cohort is
packed from. Its tf.data methods are those TFF's tutorials call after ``batch``: ``map`` (a
function of one batch, TFF's ``batch_format_fn``, given the batch's real examples only),
``repeat`` (each repetition keeps its short last batch, as in tf.data), ``take``, ``unbatch``,
``cache``, ``prefetch``; ``filter``, ``shuffle`` and ``batch`` raise an error naming the
equivalent before ``batch``. Iterations (a reshuffling ``shuffle`` upstream) follow
:mod:`fedjax_like.data.dataset`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax.tree_util as jtu
import numpy as np
from jax import ShapeDtypeStruct

from fedjax_like.data.dataset import Dataset, _num_examples, _Staged

PyTree = Any


def batch_elements(
    elements: PyTree, batch_size: int, drop_remainder: bool
) -> tuple[PyTree, np.ndarray]:
  """``(batches[num_batches, batch_size, ...], mask)``: the examples batched, the last batch
  padded with zeros (or dropped, with ``drop_remainder``)."""
  n = _num_examples(elements)
  num_batches = n // batch_size if drop_remainder else -(-n // batch_size)
  used = num_batches * batch_size
  kept = min(n, used)

  def pad(a):
    out = np.zeros((used,) + a.shape[1:], dtype=a.dtype)
    out[:kept] = a[:kept]
    return out.reshape((num_batches, batch_size) + a.shape[1:])

  mask = (np.arange(used) < kept).reshape(num_batches, batch_size)
  return jtu.tree_map(pad, elements), mask


class BatchedDataset(_Staged):
  """A client's batches as fixed-shape arrays.

  Attributes:
    batches: pytree of arrays ``[num_batches, batch_size, ...]``.
    mask: bool ``[num_batches, batch_size]``; False marks padding in short batches.
    client_id: the client these batches came from, or None.
  """

  def __init__(self, batches: PyTree, mask: np.ndarray, client_id: str | None = None):
    self.batches = batches
    self.mask = np.asarray(mask, dtype=bool)
    self.client_id = client_id

  def _iteration(self, k: int) -> tuple[PyTree, np.ndarray]:
    first = (self.batches, self.mask)
    return first if self._iterations is None or k == 0 else self._iterations(k)

  def _with(self, batches, mask) -> BatchedDataset:
    return BatchedDataset(batches, mask, client_id=self.client_id)

  def _of(self, pair: tuple[PyTree, np.ndarray]) -> BatchedDataset:
    return self._with(*pair)

  def _derived(self, fn) -> BatchedDataset:
    return self._stage(self._with(*fn((self.batches, self.mask))), fn)

  @property
  def num_batches(self) -> int:
    return self.mask.shape[0]

  @property
  def batch_size(self) -> int:
    return self.mask.shape[1]

  @property
  def num_examples(self) -> int:
    return int(self.mask.sum())

  @property
  def element_spec(self) -> PyTree:
    """The structure of one example: a pytree of ``jax.ShapeDtypeStruct``."""
    return jtu.tree_map(lambda a: ShapeDtypeStruct(a.shape[2:], a.dtype), self.batches)

  def __len__(self) -> int:
    return self.num_batches

  def __iter__(self) -> Iterator[tuple[PyTree, np.ndarray]]:
    """Yields ``(batch, mask)`` pairs, each batch a pytree of ``[batch_size, ...]`` arrays."""
    batches, mask = self._iteration(self._iterated)
    self._iterated += 1
    for i in range(mask.shape[0]):
      yield jtu.tree_map(lambda a, i=i: a[i], batches), mask[i]

  def __repr__(self) -> str:
    return (
        f'BatchedDataset(client_id={self.client_id!r}, num_batches={self.num_batches}, '
        f'batch_size={self.batch_size}, num_examples={self.num_examples})'
    )

  def map(self, fn: Callable[[PyTree], PyTree], num_parallel_calls: int | None = None,
          deterministic: bool | None = None, name: str | None = None) -> BatchedDataset:
    """Applies ``fn`` to every batch (TFF's ``batch_format_fn``), as tf.data does after ``batch``.

    ``fn`` sees the batch's real examples only (a short batch is ``[n < batch_size, ...]``, as in
    tf.data) and must return a pytree whose arrays keep that leading axis.
    """
    del num_parallel_calls, deterministic, name

    def apply(pair):
      batches, mask = pair
      outs = []
      size = mask.shape[1]
      for i in range(mask.shape[0]):
        real = int(mask[i].sum())
        batch = jtu.tree_map(lambda a, i=i, real=real: a[i, :real], batches)
        out = jtu.tree_map(np.asarray, fn(batch))
        for leaf in jtu.tree_leaves(out):
          if leaf.ndim == 0 or leaf.shape[0] != real:
            raise ValueError(
                f'BatchedDataset.map: fn must keep the batch axis; a batch of {real} examples gave '
                f'shape {leaf.shape}. Reshape with -1 for the batch, e.g. x.reshape(-1, 784).'
            )
        pad = lambda a, real=real: np.concatenate(
            [a, np.zeros((size - real,) + a.shape[1:], a.dtype)]
        )
        outs.append(jtu.tree_map(pad, out))
      return jtu.tree_map(lambda *xs: np.stack(xs), *outs), mask

    return self._derived(apply)

  def repeat(self, count: int | None = None, name: str | None = None) -> BatchedDataset:
    """The batches ``count`` times over, each repetition a new iteration (short batches kept)."""
    del name
    return self._repeat(count)

  def take(self, count: int, name: str | None = None) -> BatchedDataset:
    """The first ``count`` batches (all when -1)."""
    del name
    return self._take(count)

  def unbatch(self, name: str | None = None) -> Dataset:
    """The real examples, in order, as a :class:`Dataset` (padding dropped)."""
    del name

    def examples(pair):
      batches, mask = pair
      flat = mask.reshape(-1)
      return jtu.tree_map(lambda a: a.reshape((-1,) + a.shape[2:])[flat], batches)

    return self._stage(Dataset(examples((self.batches, self.mask)), self.client_id), examples)

  def _refuse(self, method: str, instead: str):
    raise TypeError(f'BatchedDataset.{method}: the dataset is already batched. {instead}')

  def filter(self, *args, **kwargs):
    self._refuse('filter', 'Filter examples before batching: ds.filter(pred).batch(b).')

  def shuffle(self, *args, **kwargs):
    self._refuse(
        'shuffle', 'Shuffle examples before batching: ds.shuffle(n, seed=s).batch(b) (batches '
        'here have fixed shapes, so their order is not shuffled).'
    )

  def batch(self, *args, **kwargs):
    self._refuse('batch', 'Call unbatch() first, or batch once with the final size.')

  padded_batch = batch
