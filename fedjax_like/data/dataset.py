"""A client's dataset: NumPy arrays in, fixed-shape batches plus a mask out.

A :class:`Dataset` holds a client's examples as a pytree of NumPy arrays that share a leading example
axis (``{'pixels': [n, 28, 28], 'label': [n]}``, or a tuple ``(x[n, 784], y[n])``). Its methods follow
``tf.data`` names, so the TFF idiom ports line for line::

    ds.map(lambda e: (e['pixels'].reshape(-1), e['label'])).repeat(10).batch(20)

Each method returns a new dataset (nothing is mutated). ``batch`` returns a :class:`BatchedDataset`
whose arrays are ``[num_batches, batch_size, ...]`` with a boolean ``mask[num_batches, batch_size]``
marking real examples: the ragged last batch is padded (with zeros) instead of changing shape, so one
compiled program serves every client. Everything here is host-side NumPy; only ``jax.tree_util`` is used, for pytree
structure (no device work happens here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax.tree_util as jtu
import numpy as np
from jax import ShapeDtypeStruct

PyTree = Any


def _num_examples(elements: PyTree) -> int:
  leaves = jtu.tree_leaves(elements)
  if not leaves:
    raise ValueError('A dataset needs at least one array feature; got an empty structure.')
  sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
  if None in sizes:
    raise ValueError('Every feature of a dataset must have a leading example axis; got a scalar.')
  if len(sizes) != 1:
    raise ValueError(
        f'All features of a dataset must have the same number of examples; got sizes {sorted(sizes)}.'
    )
  return sizes.pop()


class Dataset:
  """A finite sequence of examples stored as a pytree of arrays ``[num_examples, ...]``.

  Args:
    elements: a dict, tuple or other pytree of array-likes with one leading example axis.
    client_id: the client this dataset belongs to; carried along so errors can name it.
  """

  def __init__(self, elements: PyTree, client_id: str | None = None):
    self.elements = jtu.tree_map(np.asarray, elements)
    self.client_id = client_id
    self._len = _num_examples(self.elements)

  def __len__(self) -> int:
    return self._len

  def __repr__(self) -> str:
    return f'Dataset(client_id={self.client_id!r}, num_examples={len(self)}, spec={self.element_spec})'

  def __iter__(self) -> Iterator[PyTree]:
    for i in range(len(self)):
      yield jtu.tree_map(lambda a, i=i: a[i], self.elements)

  @property
  def element_spec(self) -> PyTree:
    """The structure of one example: a pytree of ``jax.ShapeDtypeStruct``."""
    return jtu.tree_map(lambda a: ShapeDtypeStruct(a.shape[1:], a.dtype), self.elements)

  def _with(self, elements: PyTree) -> Dataset:
    return Dataset(elements, client_id=self.client_id)

  def map(self, fn: Callable[[PyTree], PyTree], *, vectorized: bool = False) -> Dataset:
    """Applies ``fn`` to every example (as ``tf.data.Dataset.map``).

    Args:
      fn: example -> example; may change the structure, e.g. a dict into an ``(x, y)`` tuple.
      vectorized: if True, ``fn`` is applied once to the whole arrays ``[n, ...]`` instead of
        per example (much faster for large datasets; ``fn`` must then be batch-aware).
    """
    if vectorized:
      return self._with(fn(self.elements))
    if len(self) == 0:
      raise ValueError(
          f'Cannot map over the empty dataset of client {self.client_id!r}: its structure after the '
          'map is unknown. Drop empty clients before preprocessing.'
      )
    mapped = [fn(example) for example in self]
    return self._with(jtu.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *mapped))

  def shuffle(self, buffer_size: int | None = None, seed: int | None = None,
              reshuffle_each_iteration: bool | None = None) -> Dataset:
    """A random permutation of the examples, reproducible when ``seed`` is given.

    Arguments follow ``tf.data.Dataset.shuffle(buffer_size, seed=None, ...)`` so ported code runs
    unchanged. A buffer at least as large as the dataset is a full shuffle, which is what this does
    for any ``buffer_size`` (a smaller buffer's partial shuffle is not emulated).
    ``reshuffle_each_iteration`` is accepted and ignored: the dataset is materialized, so shuffle
    after ``repeat`` (or shuffle each epoch yourself) for a new order per epoch.
    """
    del buffer_size, reshuffle_each_iteration
    order = np.random.default_rng(seed).permutation(len(self))
    return self._with(jtu.tree_map(lambda a: a[order], self.elements))

  def repeat(self, count: int | None = None) -> Dataset:
    """The examples ``count`` times over, in order (``count`` must be a positive integer)."""
    if count is None:
      raise ValueError(
          'repeat() without a count repeats forever in tf.data; a client dataset here is finite: '
          'pass the number of local epochs, e.g. .repeat(10).'
      )
    if not isinstance(count, (int, np.integer)) or count < 1:
      raise ValueError(f'repeat(count) needs a positive integer count; got {count!r}.')
    return self._with(jtu.tree_map(lambda a: np.concatenate([a] * int(count)), self.elements))

  def take(self, count: int) -> Dataset:
    """The first ``count`` examples (all of them when ``count`` is -1, as in ``tf.data``)."""
    if count == -1:
      return self
    if not isinstance(count, (int, np.integer)) or count < 0:
      raise ValueError(f'take(count) needs a non-negative integer or -1; got {count!r}.')
    return self._with(jtu.tree_map(lambda a: a[:count], self.elements))

  def batch(self, batch_size: int, drop_remainder: bool = False) -> BatchedDataset:
    """Groups examples into ``[num_batches, batch_size, ...]`` arrays plus a padding mask."""
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
      raise ValueError(f'batch(batch_size) needs a positive integer; got {batch_size!r}.')
    n = len(self)
    num_batches = n // batch_size if drop_remainder else -(-n // batch_size)
    used = num_batches * batch_size
    kept = min(n, used)

    def pad(a):
      out = np.zeros((used,) + a.shape[1:], dtype=a.dtype)
      out[:kept] = a[:kept]
      return out.reshape((num_batches, batch_size) + a.shape[1:])

    mask = (np.arange(used) < kept).reshape(num_batches, batch_size)
    return BatchedDataset(jtu.tree_map(pad, self.elements), mask, client_id=self.client_id)


class BatchedDataset:
  """A client's batches as fixed-shape arrays.

  Attributes:
    batches: pytree of arrays ``[num_batches, batch_size, ...]``.
    mask: bool ``[num_batches, batch_size]``; False marks padding in the ragged last batch.
    client_id: the client these batches came from, or None.
  """

  def __init__(self, batches: PyTree, mask: np.ndarray, client_id: str | None = None):
    self.batches = batches
    self.mask = np.asarray(mask, dtype=bool)
    self.client_id = client_id

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
    for i in range(self.num_batches):
      yield jtu.tree_map(lambda a, i=i: a[i], self.batches), self.mask[i]

  def __repr__(self) -> str:
    return (
        f'BatchedDataset(client_id={self.client_id!r}, num_batches={self.num_batches}, '
        f'batch_size={self.batch_size}, num_examples={self.num_examples})'
    )
