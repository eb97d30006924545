"""Tests for the IID and size-skew partitioners, against plain re-derivations of Flower's sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedjax_like.data import partition as P


def _assert_each_example_once(part, n):
  counts = np.bincount(part.indices, minlength=n)
  assert len(part.indices) == n and np.all(counts == 1)


def test_iid_sizes_cover_and_seed():
  table = {'x': np.zeros((103, 2)), 'label': np.arange(103) % 7}
  part = P.IidPartitioner(10)(table)
  _assert_each_example_once(part, 103)
  assert part.sizes.tolist() == [11, 11, 11] + [10] * 7  # Contiguous shards: extras first.
  same = P.IidPartitioner(10)(table)
  np.testing.assert_array_equal(part.indices, same.indices)
  other = P.IidPartitioner(10, seed=1)(table)
  assert not np.array_equal(part.indices, other.indices)
  ordered = P.IidPartitioner(10, shuffle=False)(table)
  np.testing.assert_array_equal(ordered.indices, np.arange(103))


def _flower_sizes(fn, num_partitions, n):
  """Flower's IdToSizeFncPartitioner, written out with Python floats and math.floor."""
  units = [fn(i) for i in range(1, num_partitions + 1)]
  total = sum(units)
  sizes = [math.floor(u / total * n) for u in units]
  sizes[-1] += n - sum(sizes)
  return sizes


@pytest.mark.parametrize(
    'cls, fn',
    [(P.LinearPartitioner, lambda i: i), (P.SquarePartitioner, lambda i: i * i),
     (P.ExponentialPartitioner, math.exp)],
)
def test_size_skew_matches_flower_formula(cls, fn):
  n = 5000
  part = cls(8)(np.zeros(n))
  assert part.sizes.tolist() == _flower_sizes(fn, 8, n)
  _assert_each_example_once(part, n)


def test_exponential_many_clients_is_an_error_not_an_overflow():
  with pytest.raises(ValueError, match='would get no example'):
    P.ExponentialPartitioner(1000)(np.zeros(10_000))


def test_size_partitioner_and_errors():
  part = P.SizePartitioner([3, 1, 4])(np.zeros(10))
  assert part.sizes.tolist() == [3, 1, 4] and len(set(part.indices.tolist())) == 8
  with pytest.raises(ValueError, match='add up to 11'):
    P.SizePartitioner([5, 6])(np.zeros(10))
  with pytest.raises(ValueError, match='>= 1'):
    P.SizePartitioner([3, 0])
  with pytest.raises(ValueError, match='num_partitions=11 is more than the 10 examples'):
    P.IidPartitioner(11)(np.zeros(10))
  with pytest.raises(ValueError, match='num_partitions must be an integer'):
    P.LinearPartitioner(0)
