"""Partitioners that decide only how many examples each client gets: IID and size skew.

Names and arguments follow Flower Datasets (``flwr_datasets.partitioner``), with ``seed=42`` as
there:

* :class:`IidPartitioner`: a random permutation cut into ``num_partitions`` near-equal parts
  (sizes differ by at most one; the first ``n % num_partitions`` clients get the extra example,
  as Hugging Face's contiguous ``shard`` that Flower uses).
* :class:`SizePartitioner`: given sizes.
* :class:`LinearPartitioner`, :class:`SquarePartitioner`, :class:`ExponentialPartitioner`: client
  ``i`` (``i = 1..M``) gets a share proportional to ``i``, ``i**2`` or ``e**i``:
  ``size_i = floor(n * f(i) / sum_j f(j))``, the examples left over by the floors going to the last
  (largest) client, as Flower's ``IdToSizeFncPartitioner``. The exponential shares are computed
  from ``i - M`` (the same fractions, without overflow for thousands of clients).

Flower's size partitioners take consecutive examples of the dataset as given (Flower shuffles the
dataset before partitioning); here ``shuffle=True`` (the default) draws the examples from a seeded
permutation, and ``shuffle=False`` takes them in order.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence

import numpy as np

from fedjax_like.data.partition import base


@dataclasses.dataclass(frozen=True)
class IidPartitioner:
  """``num_partitions`` clients of near-equal size, examples drawn uniformly at random.

  Args:
    num_partitions: the number of clients.
    shuffle: draw examples from a seeded permutation (False: consecutive runs, as given).
    seed: the permutation's seed.
  """

  num_partitions: int
  _: dataclasses.KW_ONLY
  shuffle: bool = True
  seed: int | None = 42

  def __post_init__(self):
    base.check_count(self.num_partitions, 'num_partitions', 'IidPartitioner')

  def __call__(self, table: base.Table) -> base.Partition:
    n = base.num_rows(table, 'IidPartitioner')
    base.check_enough_examples(self.num_partitions, n, 'IidPartitioner')
    sizes = np.full(self.num_partitions, n // self.num_partitions, dtype=np.int64)
    sizes[: n % self.num_partitions] += 1
    rng = np.random.default_rng(self.seed) if self.shuffle else None
    return base.Partition.from_sizes(sizes, n, rng)


@dataclasses.dataclass(frozen=True)
class SizePartitioner:
  """Client ``i`` gets ``partition_sizes[i]`` examples (their sum may be less than the data).

  Args:
    partition_sizes: positive sizes, one per client.
    shuffle: draw examples from a seeded permutation (False: consecutive runs, as given).
    seed: the permutation's seed.
  """

  partition_sizes: Sequence[int]
  _: dataclasses.KW_ONLY
  shuffle: bool = True
  seed: int | None = 42

  def __post_init__(self):
    sizes = list(self.partition_sizes)
    if not sizes:
      raise ValueError('SizePartitioner: partition_sizes is empty; give one size per client.')
    for size in sizes:
      base.check_count(size, 'every partition size', 'SizePartitioner')

  def __call__(self, table: base.Table) -> base.Partition:
    n = base.num_rows(table, 'SizePartitioner')
    sizes = np.asarray(self.partition_sizes, dtype=np.int64)
    if sizes.sum() > n:
      raise ValueError(
          f'SizePartitioner: the sizes add up to {int(sizes.sum())}, more than the {n} examples.'
      )
    rng = np.random.default_rng(self.seed) if self.shuffle else None
    return base.Partition.from_sizes(sizes, n, rng)


def _shares_sizes(units: np.ndarray, n: int, who: str) -> np.ndarray:
  """Flower's sizes from per-client units: floors of the shares, the remainder to the last."""
  sizes = (units / units.sum() * n).astype(np.int64)
  sizes[-1] += n - sizes.sum()
  if sizes.min() < 1:
    empty = int(np.count_nonzero(sizes < 1))
    raise ValueError(
        f'{who}: with {len(sizes)} partitions of {n} examples, {empty} clients would get no '
        'example. Use fewer partitions or more data.'
    )
  return sizes


@dataclasses.dataclass(frozen=True)
class _IdToSizePartitioner(abc.ABC):
  num_partitions: int
  _: dataclasses.KW_ONLY
  shuffle: bool = True
  seed: int | None = 42

  def __post_init__(self):
    base.check_count(self.num_partitions, 'num_partitions', type(self).__name__)

  @abc.abstractmethod
  def _units(self, ids: np.ndarray) -> np.ndarray:
    """Each partition id's share of the examples, up to a factor (``ids``: 1..num_partitions)."""

  def __call__(self, table: base.Table) -> base.Partition:
    who = type(self).__name__
    n = base.num_rows(table, who)
    base.check_enough_examples(self.num_partitions, n, who)
    ids = np.arange(1, self.num_partitions + 1, dtype=np.float64)
    sizes = _shares_sizes(self._units(ids), n, who)
    rng = np.random.default_rng(self.seed) if self.shuffle else None
    return base.Partition.from_sizes(sizes, n, rng)


class LinearPartitioner(_IdToSizePartitioner):
  """Client ``i`` of ``1..num_partitions`` gets a share of the data proportional to ``i``.

  Args:
    num_partitions: the number of clients.
    shuffle: draw examples from a seeded permutation (False: consecutive runs, as given).
    seed: the permutation's seed.
  """

  def _units(self, ids):
    return ids


class SquarePartitioner(_IdToSizePartitioner):
  """Client ``i`` of ``1..num_partitions`` gets a share proportional to ``i**2``.

  Args: as :class:`LinearPartitioner`.
  """

  def _units(self, ids):
    return np.square(ids)


class ExponentialPartitioner(_IdToSizePartitioner):
  """Client ``i`` of ``1..num_partitions`` gets a share proportional to ``e**i``.

  Args: as :class:`LinearPartitioner`. Beyond a few dozen clients the smallest shares round to
  zero examples, which is an error (as in Flower).
  """

  def _units(self, ids):
    return np.exp(ids - ids[-1])
