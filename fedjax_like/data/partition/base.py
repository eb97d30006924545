"""The result of partitioning centralized data: which examples each client holds.

A :class:`Partition` stores the clients' example indices in one flat array, client after client
(``indices[offsets[c]:offsets[c + 1]]`` are client ``c``'s indices into the centralized data), so
a million examples over ten thousand clients cost two NumPy arrays, not ten thousand lists.
``partition.client_data(arrays)`` serves it as a :class:`~fedjax_like.data.ClientData` that slices
the centralized arrays when a client is asked for (nothing is copied up front);
``partition.index_lists()`` gives the per-client index arrays for code that builds its own.

Every partitioner in this package is a callable ``partitioner(table) -> Partition`` where ``table``
is the centralized data: a mapping ``{column: array[num_examples, ...]}`` (the partitioner reads
the column it needs, ``partition_by``) or, for convenience, that one column as a bare array.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import jax.tree_util as jtu
import numpy as np

from fedjax_like.data.client_data import ClientData

Table = Mapping[str, Any] | np.ndarray


class Partitioner(Protocol):
  """``partitioner(table) -> Partition``: splits centralized data into clients."""

  def __call__(self, table: Table) -> Partition: ...


@dataclasses.dataclass(frozen=True, eq=False)
class Partition:
  """Clients' example indices into centralized data of ``num_examples`` examples.

  Attributes:
    client_ids: one id per client, in client order.
    indices: int64 ``[num_assigned]``: example indices, client after client.
    offsets: int64 ``[num_clients + 1]``: client ``c`` holds ``indices[offsets[c]:offsets[c+1]]``.
    num_examples: the size of the centralized data the indices point into.
  """

  client_ids: tuple[str, ...]
  indices: np.ndarray
  offsets: np.ndarray
  num_examples: int

  def __post_init__(self):
    if len(self.offsets) != len(self.client_ids) + 1:
      raise ValueError('Partition: offsets must have one entry more than client_ids.')
    if len(set(self.client_ids)) != len(self.client_ids):
      raise ValueError('Partition: client_ids must be unique.')

  @classmethod
  def from_assignment(
      cls,
      client_of: np.ndarray,
      num_clients: int,
      client_ids: Sequence[str] | None = None,
      rng: np.random.Generator | None = None,
  ) -> Partition:
    """From ``client_of[i]``, the client of example ``i`` (-1: no client), in one stable sort.

    Within a client, examples keep their index order, or a random order drawn from ``rng``.
    """
    client_of = np.asarray(client_of, dtype=np.int64)
    n = client_of.shape[0]
    positions = np.arange(n, dtype=np.int64) if rng is None else rng.permutation(n)
    keys = client_of[positions]
    kept = positions[keys >= 0]
    keys = keys[keys >= 0]
    order = stable_order(keys, num_clients)
    counts = np.bincount(keys, minlength=num_clients)
    offsets = np.zeros(num_clients + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    ids = tuple(str(c) for c in range(num_clients)) if client_ids is None else tuple(client_ids)
    return cls(ids, kept[order], offsets, n)

  @classmethod
  def from_sizes(
      cls, sizes: np.ndarray, num_examples: int, rng: np.random.Generator | None
  ) -> Partition:
    """Consecutive runs of ``sizes`` examples (of a random permutation when ``rng`` is given)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    n = num_examples
    order = np.arange(n, dtype=np.int64) if rng is None else rng.permutation(n)
    ids = tuple(str(c) for c in range(len(sizes)))
    return cls(ids, order[: offsets[-1]], offsets, num_examples)

  # Reading it -----------------------------------------------------------------------------------

  def __len__(self) -> int:
    return len(self.client_ids)

  def __repr__(self) -> str:
    return (
        f'Partition(num_clients={len(self)}, num_assigned={len(self.indices)}, '
        f'num_examples={self.num_examples})'
    )

  @property
  def sizes(self) -> np.ndarray:
    """int64 ``[num_clients]``: examples per client."""
    return np.diff(self.offsets)

  def client_index(self, client: int | str) -> np.ndarray:
    """The example indices of one client, by position or by id."""
    position = self._position(client)
    return self.indices[self.offsets[position] : self.offsets[position + 1]]

  def index_lists(self) -> list[np.ndarray]:
    """One int64 index array per client, in client order (views into ``indices``)."""
    return np.split(self.indices, self.offsets[1:-1])

  def client_of(self) -> np.ndarray:
    """int64 ``[num_examples]``: each example's client position, -1 where it has none."""
    out = np.full(self.num_examples, -1, dtype=np.int64)
    out[self.indices] = np.repeat(np.arange(len(self), dtype=np.int64), self.sizes)
    return out

  def client_data(self, arrays: Any) -> ClientData:
    """A ClientData whose client ``c`` holds ``arrays[indices of c]``, sliced when asked for.

    Args:
      arrays: the centralized data: a pytree (e.g. ``{feature: array}``) of arrays with leading
        axis ``num_examples``.
    """
    leaves = jtu.tree_leaves(arrays)
    lengths = {len(leaf) for leaf in leaves}
    if lengths != {self.num_examples}:
      raise ValueError(
          f'client_data(): the arrays have leading sizes {sorted(lengths)}; this partition is of '
          f'{self.num_examples} examples. Pass the same data that was partitioned.'
      )
    sizes = dict(zip(self.client_ids, self.sizes.tolist(), strict=True))
    return ClientData.from_loader(self.client_ids, _Slicer(self, arrays), sizes=sizes)

  def _position(self, client: int | str) -> int:
    if isinstance(client, (int, np.integer)):
      if not 0 <= client < len(self):
        raise IndexError(f'client position {client} is out of range [0, {len(self)}).')
      return int(client)
    try:
      return self._positions()[str(client)]
    except KeyError:
      raise KeyError(f'Unknown client id {client!r} (e.g. {list(self.client_ids[:3])}).') from None

  def _positions(self) -> dict[str, int]:
    cache = self.__dict__.get('_position_cache')
    if cache is None:
      cache = {c: i for i, c in enumerate(self.client_ids)}
      object.__setattr__(self, '_position_cache', cache)
    return cache


class _Slicer:
  """``client_id -> arrays[client's indices]``; a picklable loader for ClientData."""

  def __init__(self, partition: Partition, arrays: Any):
    self._partition = partition
    self._arrays = arrays

  def __call__(self, client_id: str) -> Any:
    index = self._partition.client_index(client_id)
    return jtu.tree_map(lambda a: a[index], self._arrays)


# Shared argument checks and table access ----------------------------------------------------------


def column(table: Table, name: str | None, who: str) -> np.ndarray:
  """``table[name]`` as a 1-D array (or the table itself when it is a bare array)."""
  if isinstance(table, np.ndarray) or not isinstance(table, Mapping):
    values = np.asarray(table)
  else:
    if name not in table:
      raise KeyError(
          f'{who}: the data has no column {name!r} (its columns: {sorted(table)}); set '
          'partition_by to the column that holds the labels or ids.'
      )
    values = np.asarray(table[name])
  if values.ndim != 1:
    raise ValueError(
        f'{who}: the {name!r} column must be one value per example ([num_examples]); got shape '
        f'{values.shape}.'
    )
  return values


def num_rows(table: Table, who: str) -> int:
  """The number of examples in ``table`` (every column must agree)."""
  if isinstance(table, np.ndarray) or not isinstance(table, Mapping):
    return len(np.asarray(table))
  lengths = {len(v) for v in jtu.tree_leaves(dict(table))}
  if len(lengths) != 1:
    raise ValueError(f'{who}: the columns have different lengths {sorted(lengths)}.')
  return lengths.pop()


def check_count(value: Any, name: str, who: str, minimum: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f'{who}: {name} must be an integer >= {minimum}; got {value!r}.')
  return int(value)


def check_enough_examples(num_partitions: int, n: int, who: str) -> None:
  if num_partitions > n:
    raise ValueError(
        f'{who}: num_partitions={num_partitions} is more than the {n} examples; every client '
        'needs at least one. Use fewer partitions.'
    )


def stable_order(keys: np.ndarray, num_keys: int) -> np.ndarray:
  """``np.argsort(keys, kind='stable')`` for keys in ``[0, num_keys)``, as a radix sort (NumPy's
  stable sort of 8- and 16-bit integers) when the keys fit in 16 bits."""
  if num_keys <= 1 << 8:
    keys = keys.astype(np.uint8)
  elif num_keys <= 1 << 16:
    keys = keys.astype(np.uint16)
  return np.argsort(keys, kind='stable')


def encode_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """``(classes, codes)``: the sorted distinct labels and each example's index into them.

  Integers in a modest range are counted (no sort); Python strings and bytes are factorized
  through a dict and only the distinct values sorted; anything else goes through ``np.unique``.
  """
  if labels.dtype.kind in 'iub' and len(labels):
    low, high = int(labels.min()), int(labels.max())
    if high - low < 1 << 24:
      shifted = labels.astype(np.int64) - low
      present = np.bincount(shifted, minlength=high - low + 1) > 0
      lookup = np.cumsum(present) - 1
      classes = (np.flatnonzero(present) + low).astype(labels.dtype)
      return classes, lookup[shifted]
  if labels.dtype == object and len(labels):
    values = labels.tolist()
    kinds = set(map(type, values))
    if kinds <= {str} or kinds <= {bytes}:
      first_seen: dict = {}
      codes = np.fromiter(
          (first_seen.setdefault(v, len(first_seen)) for v in values), np.int64, len(values)
      )
      distinct = list(first_seen)
      rank = np.empty(len(distinct), dtype=np.int64)
      order = sorted(range(len(distinct)), key=distinct.__getitem__)
      rank[order] = np.arange(len(distinct))
      return np.array([distinct[i] for i in order], dtype=object), rank[codes]
  try:
    classes, codes = np.unique(labels, return_inverse=True)
  except TypeError as e:
    raise TypeError(
        f'The values {labels[:5].tolist()}... cannot be sorted together ({e}); make the column '
        'one type (all ints, all strings or all bytes).'
    ) from None
  return classes, codes.reshape(-1).astype(np.int64)
