"""Tests for ClientData.datasets_for_clients: a cohort read at once, the same datasets as one by
one, through subset and preprocess."""

from __future__ import annotations

import numpy as np
import pytest

from fedjax_like.data import ClientData


def _arrays(c: str) -> dict:
  n = int(c) + 1
  return {'x': np.arange(n) + 10 * int(c), 'y': np.full(n, int(c))}


def test_cohort_read_with_load_many_matches_one_by_one():
  batches = []

  def load_many(ids):
    batches.append(list(ids))
    return [_arrays(c) for c in ids]

  data = ClientData.from_loader(['0', '1', '2', '3'], _arrays, load_many=load_many)
  data = data.preprocess(lambda ds: ds.take(2)).subset(['3', '1', '2'])
  got = data.datasets_for_clients(['2', '3'])
  assert batches == [['2', '3']]  # One call for the cohort, through preprocess and subset.
  for c, ds in zip(['2', '3'], got, strict=True):
    want = data.dataset_for_client(c)
    assert ds.client_id == c and len(ds) == 2
    np.testing.assert_array_equal(ds.elements['x'], want.elements['x'])


def test_without_load_many_and_unknown_ids():
  data = ClientData.from_clients_dict({c: _arrays(c) for c in '012'})
  got = data.datasets_for_clients(['1', '0'])
  assert [len(d) for d in got] == [2, 1]
  with pytest.raises(KeyError, match="Unknown client_id '7'"):
    data.datasets_for_clients(['0', '7'])
