"""Tests for NaturalIdPartitioner: one client per distinct id, ids kept, index order kept."""

from __future__ import annotations

import numpy as np
import pytest

from fedjax_like.data import partition as P


def test_one_client_per_id_sorted_in_index_order():
  users = np.array([b'bob', b'al', b'bob', b'cy', b'al', b'bob'], dtype=object)
  table = {'user': users, 'x': np.arange(6) * 10}
  part = P.NaturalIdPartitioner('user')(table)
  assert part.client_ids == ('al', 'bob', 'cy')  # Sorted as Flower sorts the unique ids.
  assert [ix.tolist() for ix in part.index_lists()] == [[1, 4], [0, 2, 5], [3]]
  data = part.client_data(table)
  np.testing.assert_array_equal(data.dataset_for_client('bob').elements['x'], [0, 20, 50])


def test_integer_and_string_ids():
  part = P.NaturalIdPartitioner('speaker')({'speaker': np.array([10, 2, 10, 2, 7])})
  assert part.client_ids == ('2', '7', '10')  # Numeric order for numbers.
  assert part.sizes.tolist() == [2, 1, 2]
  part = P.NaturalIdPartitioner('u')({'u': np.array(['b', 'a', 'b'])})
  assert part.client_ids == ('a', 'b')


def test_every_example_once_at_scale():
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 500, 20_000)
  part = P.NaturalIdPartitioner('u')({'u': ids.astype(str).astype(object)})
  assert len(part) == len(np.unique(ids))
  assert np.all(np.bincount(part.indices, minlength=20_000) == 1)
  for cid, ix in zip(part.client_ids[:20], part.index_lists()[:20], strict=True):
    assert np.all(ids[ix] == int(cid)) and np.all(np.diff(ix) > 0)


def test_errors():
  with pytest.raises(KeyError, match="no column 'user'"):
    P.NaturalIdPartitioner('user')({'label': np.zeros(3)})
  with pytest.raises(TypeError, match='one type'):
    P.NaturalIdPartitioner('u')({'u': np.array([1, '1'], dtype=object)})
