"""Tests for Partition: the flat index layout, its views, and ClientData built from it."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from fedjax_like.data.partition import Partition


def test_from_assignment_groups_examples_by_client_in_index_order():
  client_of = np.array([2, 0, -1, 2, 1, 0, 2, -1])
  part = Partition.from_assignment(client_of, 4)
  expected = [[i for i, c in enumerate(client_of) if c == k] for k in range(4)]  # Plain loop.
  assert [ix.tolist() for ix in part.index_lists()] == expected
  assert part.client_ids == ('0', '1', '2', '3')
  np.testing.assert_array_equal(part.sizes, [2, 1, 3, 0])
  np.testing.assert_array_equal(part.client_of(), client_of)
  np.testing.assert_array_equal(part.client_index('2'), [0, 3, 6])
  np.testing.assert_array_equal(part.client_index(1), [4])


def test_from_assignment_shuffles_within_clients_only():
  rng = np.random.default_rng(3)
  client_of = rng.integers(0, 5, 200)
  part = Partition.from_assignment(client_of, 5, rng=np.random.default_rng(0))
  for k, ix in enumerate(part.index_lists()):
    assert sorted(ix.tolist()) == np.flatnonzero(client_of == k).tolist()
  assert any(np.any(np.diff(ix) < 0) for ix in part.index_lists())  # Not all in index order.


def test_client_data_slices_the_centralized_arrays():
  x = np.arange(20).reshape(10, 2)
  y = np.arange(10) * 10
  part = Partition.from_assignment(np.array([1, 1, 0, 2, 0, 1, 2, 2, 0, 1]), 3)
  data = part.client_data({'x': x, 'y': y})
  assert data.client_ids == ['0', '1', '2']
  assert data.client_sizes() == {'0': 3, '1': 4, '2': 3}
  ds = data.dataset_for_client('1')
  np.testing.assert_array_equal(ds.elements['y'], [0, 10, 50, 90])
  np.testing.assert_array_equal(ds.elements['x'], x[[0, 1, 5, 9]])
  again = pickle.loads(pickle.dumps(data))
  np.testing.assert_array_equal(again.dataset_for_client('2').elements['y'], [30, 60, 70])


def test_errors_name_the_problem():
  part = Partition.from_assignment(np.array([0, 1]), 2)
  with pytest.raises(ValueError, match='leading sizes'):
    part.client_data({'x': np.zeros(3)})
  with pytest.raises(KeyError, match="Unknown client id 'z'"):
    part.client_index('z')
  with pytest.raises(IndexError):
    part.client_index(2)
  with pytest.raises(ValueError, match='unique'):
    Partition(('a', 'a'), np.zeros(0, np.int64), np.zeros(3, np.int64), 0)
