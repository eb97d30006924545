"""A client's dataset: NumPy arrays in, fixed-shape batches plus a mask out, with tf.data's methods.

A :class:`Dataset` holds a client's examples as a pytree of NumPy arrays that share a leading
example axis (``{'pixels': [n, 28, 28], 'label': [n]}``, or a tuple ``(x[n, 784], y[n])``). Its
methods are ``tf.data``'s, with tf.data's semantics, so TFF preprocessing ports line for line, in
any of the orders TFF's tutorials use::

    ds.map(lambda e: (e['pixels'].reshape(-1), e['label'])).repeat(10).batch(20)
    ds.repeat(5).shuffle(100, seed=1).batch(20).map(batch_format_fn).prefetch(10)
    ds.batch(20).repeat(10)

``batch`` returns a :class:`~fedjax_like.data.batched_dataset.BatchedDataset`: arrays
``[num_batches, batch_size, ...]`` and a boolean ``mask[num_batches, batch_size]`` marking real
examples; a short batch (tf.data's last batch, or each repetition's last batch after
``.batch(b).repeat(n)``) is padded with zeros instead of changing shape, so one compiled program
serves every client.

Methods: ``map`` (``num_parallel_calls``, ``deterministic`` accepted), ``filter``, ``shuffle``,
``repeat``, ``take``, ``skip``, ``batch``, ``padded_batch``, ``unbatch``, and ``cache`` and
``prefetch`` (no-ops: the data is in memory). After ``batch``: ``map`` (TFF's
``batch_format_fn``), ``repeat``, ``take``, ``unbatch``, ``cache``, ``prefetch``; methods with no
sound meaning on fixed-shape batches raise an error naming the equivalent.

**Iterations.** Every method returns a new dataset (nothing is mutated) holding its first
iteration's examples (``elements``, ``batches``), which is what training reads. As in tf.data,
``shuffle(..., reshuffle_each_iteration=True)`` (tf.data's default) draws a new order each time the
dataset is iterated, so ``.shuffle(n, seed=s).repeat(2)`` holds two different permutations (the
same two for the same seed), and so does every later stage; ``reshuffle_each_iteration=False``
repeats one order. A full shuffle is done whatever ``buffer_size`` is (a smaller buffer's partial
shuffle is not emulated). A learning process reads a dataset's first iteration each round:
rebuild the datasets for a new order per round (the simulation driver does, seeded by round).
Host side only: NumPy, and ``jax.tree_util`` for pytree structure.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import jax.tree_util as jtu
import numpy as np
from jax import ShapeDtypeStruct

if TYPE_CHECKING:
  from fedjax_like.data.batched_dataset import BatchedDataset

PyTree = Any
_Iterations = Callable[[int], PyTree]  # k -> the arrays of the k-th iteration (k >= 0)


def _num_examples(elements: PyTree) -> int:
  leaves = jtu.tree_leaves(elements)
  if not leaves:
    raise ValueError('A dataset needs at least one array feature; got an empty structure.')
  sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
  if None in sizes:
    raise ValueError('Every feature of a dataset must have a leading example axis; got a scalar.')
  if len(sizes) != 1:
    raise ValueError(
        'All features of a dataset must have the same number of examples; got sizes '
        f'{sorted(sizes)}.'
    )
  return sizes.pop()


def _positive(count, what: str) -> int:
  if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 1:
    raise ValueError(f'{what} needs a positive integer; got {count!r}.')
  return int(count)


def _forever(name: str) -> ValueError:
  return ValueError(
      f'{name}() without a count repeats forever in tf.data; a client dataset here is finite: '
      'pass the number of local epochs, e.g. .repeat(10).'
  )


class _Staged(abc.ABC):
  """What both dataset kinds share: a first iteration plus, when a reshuffling ``shuffle`` is
  upstream, a function giving the k-th iteration (None: every iteration is the first)."""

  _iterations: _Iterations | None = None
  _iterated = 0

  @abc.abstractmethod
  def _iteration(self, k: int) -> PyTree:
    """The k-th iteration's arrays (0: the first)."""

  def _stage(self, out, fn: Callable[[PyTree], PyTree]):
    """``out`` (built from ``fn(first iteration)``) made to apply ``fn`` to later ones too."""
    if self._iterations is not None:
      out._iterations = lambda k: fn(self._iteration(k))
    return out

  @abc.abstractmethod
  def _of(self, arrays: PyTree):
    """A dataset of this kind whose first iteration is ``arrays`` (as ``_iteration`` returns)."""

  @abc.abstractmethod
  def _derived(self, fn: Callable[[PyTree], PyTree]):
    """``_of(fn(first iteration))``, applying ``fn`` to later iterations too."""

  def _repeat(self, count: int | None):
    """``repeat(count)`` of either kind: ``count`` iterations, one after the other."""
    if count is None or count == -1:
      raise _forever('repeat')
    count = _positive(count, 'repeat(count)')

    def repeated(j):
      parts = [self._iteration(j * count + i) for i in range(count)]
      return jtu.tree_map(lambda *xs: np.concatenate(xs), *parts)

    out = self._of(repeated(0))
    if self._iterations is not None:
      out._iterations = repeated
    return out

  def _take(self, count: int):
    """``take(count)`` of either kind: the first ``count`` entries of the leading axis."""
    if count == -1:
      return self
    if not isinstance(count, (int, np.integer)) or count < 0:
      raise ValueError(f'take(count) needs a non-negative integer or -1; got {count!r}.')
    return self._derived(lambda arrays: jtu.tree_map(lambda a: a[:count], arrays))

  def prefetch(self, buffer_size: int | None = None, name: str | None = None):
    """tf.data's prefetch: nothing to do here (the data is in memory); returns the dataset."""
    del buffer_size, name
    return self

  def cache(self, filename: str = '', name: str | None = None):
    """tf.data's cache: the dataset is already materialized; returns it."""
    del filename, name
    return self


class Dataset(_Staged):
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
    return (
        f'Dataset(client_id={self.client_id!r}, num_examples={len(self)}, '
        f'spec={self.element_spec})'
    )

  def __iter__(self) -> Iterator[PyTree]:
    """The examples, one pytree each; a reshuffling dataset gives its next order each time."""
    elements = self._iteration(self._iterated)
    self._iterated += 1
    for i in range(_num_examples(elements)):
      yield jtu.tree_map(lambda a, i=i: a[i], elements)

  def _iteration(self, k: int) -> PyTree:
    return self.elements if self._iterations is None or k == 0 else self._iterations(k)

  @property
  def element_spec(self) -> PyTree:
    """The structure of one example: a pytree of ``jax.ShapeDtypeStruct``."""
    return jtu.tree_map(lambda a: ShapeDtypeStruct(a.shape[1:], a.dtype), self.elements)

  def _with(self, elements: PyTree) -> Dataset:
    return Dataset(elements, client_id=self.client_id)

  def _of(self, elements: PyTree) -> Dataset:
    return self._with(elements)

  def _derived(self, fn: Callable[[PyTree], PyTree]) -> Dataset:
    return self._stage(self._with(fn(self.elements)), fn)

  def _examples(self, elements: PyTree) -> list[PyTree]:
    return [jtu.tree_map(lambda a, i=i: a[i], elements) for i in range(_num_examples(elements))]

  def map(self, fn: Callable[[PyTree], PyTree], num_parallel_calls: int | None = None,
          deterministic: bool | None = None, name: str | None = None, *,
          vectorized: bool = False) -> Dataset:
    """Applies ``fn`` to every example (as ``tf.data.Dataset.map``).

    Args:
      fn: example -> example; may change the structure, e.g. a dict into an ``(x, y)`` tuple.
      num_parallel_calls, deterministic, name: tf.data's; accepted and ignored (order is kept).
      vectorized: if True, ``fn`` is applied once to the whole arrays ``[n, ...]`` instead of
        per example (much faster for large datasets; ``fn`` must then be batch-aware).
    """
    del num_parallel_calls, deterministic, name
    if vectorized:
      return self._derived(fn)
    if len(self) == 0:
      raise ValueError(
          f'Cannot map over the empty dataset of client {self.client_id!r}: its structure after '
          'the map is unknown. Drop empty clients before preprocessing.'
      )

    def apply(elements):
      mapped = [fn(example) for example in self._examples(elements)]
      return jtu.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *mapped)

    return self._derived(apply)

  def filter(self, predicate: Callable[[PyTree], Any], name: str | None = None) -> Dataset:
    """The examples for which ``predicate(example)`` is true (as ``tf.data.Dataset.filter``)."""
    del name

    def keep(elements):
      flags = np.array([bool(predicate(e)) for e in self._examples(elements)], dtype=bool)
      return jtu.tree_map(lambda a: a[flags], elements)

    return self._derived(keep)

  def shuffle(self, buffer_size: int | None = None, seed: int | None = None,
              reshuffle_each_iteration: bool | None = None, name: str | None = None) -> Dataset:
    """A random permutation of the examples, reproducible when ``seed`` is given.

    Arguments are ``tf.data.Dataset.shuffle``'s. ``reshuffle_each_iteration`` (default True, as in
    tf.data) draws a new order for each iteration (each repetition of a later ``repeat``); False
    keeps the first order. Any ``buffer_size`` shuffles fully (a buffer at least the dataset's
    size, which is what TFF's baselines use). The k-th iteration's order is the k-th permutation
    drawn from ``np.random.default_rng(seed)``.
    """
    del buffer_size, name
    reshuffle = True if reshuffle_each_iteration is None else bool(reshuffle_each_iteration)
    rng, orders = np.random.default_rng(seed), []

    def shuffled(k):
      elements = self._iteration(k)
      while len(orders) <= (k if reshuffle else 0):
        orders.append(rng.permutation(_num_examples(elements)))
      order = orders[k if reshuffle else 0]
      return jtu.tree_map(lambda a: a[order], elements)

    out = self._with(shuffled(0))
    if reshuffle or self._iterations is not None:
      out._iterations = shuffled
    return out

  def repeat(self, count: int | None = None, name: str | None = None) -> Dataset:
    """The examples ``count`` times over (each repetition a new iteration of this dataset)."""
    del name
    return self._repeat(count)

  def take(self, count: int, name: str | None = None) -> Dataset:
    """The first ``count`` examples (all of them when ``count`` is -1, as in ``tf.data``)."""
    del name
    return self._take(count)

  def skip(self, count: int, name: str | None = None) -> Dataset:
    """All but the first ``count`` examples (none when ``count`` is -1, as in ``tf.data``)."""
    del name
    if not isinstance(count, (int, np.integer)) or count < -1:
      raise ValueError(f'skip(count) needs a non-negative integer or -1; got {count!r}.')
    start = None if count == -1 else int(count)
    return self._derived(
        lambda elements: jtu.tree_map(lambda a: a[len(a) if start is None else start :], elements)
    )

  def unbatch(self, name: str | None = None) -> Dataset:
    """Splits each example's leading axis into examples: ``[n, k, ...]`` -> ``[n * k, ...]``."""
    del name

    def split(elements):
      leaves = jtu.tree_leaves(elements)
      inner = {leaf.shape[1] if leaf.ndim > 1 else None for leaf in leaves}
      if None in inner or len(inner) != 1:
        raise ValueError(
            'unbatch() needs every feature to have a second axis of one size (examples that are '
            f'batches); got shapes {[leaf.shape for leaf in leaves]}.'
        )
      return jtu.tree_map(lambda a: a.reshape((-1,) + a.shape[2:]), elements)

    return self._derived(split)

  def batch(self, batch_size: int, drop_remainder: bool = False,
            num_parallel_calls: int | None = None, deterministic: bool | None = None,
            name: str | None = None) -> BatchedDataset:
    """Groups examples into ``[num_batches, batch_size, ...]`` arrays plus a padding mask."""
    from fedjax_like.data.batched_dataset import BatchedDataset, batch_elements

    del num_parallel_calls, deterministic, name
    batch_size = _positive(batch_size, 'batch(batch_size)')

    def batched(elements):
      return batch_elements(elements, batch_size, drop_remainder)

    out = BatchedDataset(*batched(self.elements), client_id=self.client_id)
    return self._stage(out, batched)

  def padded_batch(self, batch_size: int, padded_shapes: PyTree = None,
                   padding_values: PyTree = None, drop_remainder: bool = False,
                   name: str | None = None) -> BatchedDataset:
    """``batch`` after padding each example's axes up to ``padded_shapes`` (tf.data's).

    Examples here already share one shape, so ``padded_shapes`` of None (or None / -1 axes) keep
    it; a larger size pads the axis at its end with ``padding_values`` (default 0).
    """
    del name
    if padded_shapes is None:
      return self.batch(batch_size, drop_remainder)
    structure = jtu.tree_structure(self.elements)
    shapes = structure.flatten_up_to(padded_shapes)
    values = [0] * len(shapes) if padding_values is None else (
        structure.flatten_up_to(padding_values)
        if jtu.tree_structure(padding_values) == structure
        else [padding_values] * len(shapes)
    )

    def pad(elements):
      out = []
      for leaf, shape, value in zip(structure.flatten_up_to(elements), shapes, values, strict=True):
        want = leaf.shape[1:] if shape is None else tuple(shape)
        if len(want) != leaf.ndim - 1:
          raise ValueError(f'padded_batch: padded shape {want} for examples {leaf.shape[1:]}.')
        widths = [(0, 0)]
        for have, size in zip(leaf.shape[1:], want, strict=True):
          size = have if size in (None, -1) else int(size)
          if size < have:
            raise ValueError(f'padded_batch: padded shape {want} is smaller than {leaf.shape[1:]}.')
          widths.append((0, size - have))
        out.append(np.pad(leaf, widths, constant_values=value))
      return structure.unflatten(out)

    return self._derived(pad).batch(batch_size, drop_remainder)



def __getattr__(name: str):
  """``BatchedDataset`` lives in :mod:`.batched_dataset` (which builds on this module)."""
  if name == 'BatchedDataset':
    from fedjax_like.data.batched_dataset import BatchedDataset

    return BatchedDataset
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
