"""Padding clients: appended masked and empty, accepted by validation, which still refuses a real
empty client."""

import jax
import numpy as np
import pytest
from packed_cohorts import TinyModel as _Model
from packed_cohorts import small_cohort as _cohort

import fedjax_like as fl
from fedjax_like.data.packing import PADDING_CLIENT_ID, pad_cohort, validate_cohort


def test_pad_cohort_appends_masked_empty_padding_clients():
  packed = _cohort([3, 5])
  padded = pad_cohort(packed, 4)
  assert padded.client_ids == ('c0', 'c1', PADDING_CLIENT_ID, PADDING_CLIENT_ID)
  assert padded.mask.shape == (4,) + packed.mask.shape[1:]
  np.testing.assert_array_equal(padded.num_examples, [3, 5, 0, 0])
  for a, b in zip(jax.tree.leaves(padded.batches), jax.tree.leaves(packed.batches), strict=True):
    np.testing.assert_array_equal(a[:2], b)
    assert not a[2:].any()
  assert pad_cohort(packed, 2) is packed and pad_cohort(packed, 1) is packed
  validate_cohort(padded, _Model())  # padding clients may be empty


def test_a_real_empty_client_is_still_refused():
  packed = _cohort([3, 5])
  mask = packed.mask.copy()
  mask[1] = False
  empty = fl.data.packing.PackedCohort(packed.batches, mask, packed.client_ids)
  with pytest.raises(ValueError, match='Client c1 has no examples'):
    validate_cohort(empty, _Model())
