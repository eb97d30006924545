"""CohortSource (data/cohort_source.py): a cohort packed on demand, with what a read-only cohort
keeps."""

import jax
import numpy as np
import pytest
from packed_cohorts import TinyModel as _Model
from packed_cohorts import small_cohort as _cohort

from fedjax_like.data import Dataset, packing
from fedjax_like.data.packing import pack_cohort
from fedjax_like.data.cohort_source import CohortSource


def test_a_packed_cohort_is_read_only_and_checked_once_per_model(monkeypatch):
  packed = _cohort([3, 5])
  with pytest.raises(ValueError, match='read-only'):
    packed.mask[0, 0, 0] = False
  calls = []
  real = packing.validate_cohort
  monkeypatch.setattr(packing, 'validate_cohort', lambda p, m: calls.append(1) or real(p, m))
  model = _Model()
  for _ in range(3):
    source = CohortSource(packed, model)
    source.take(np.arange(2))
  assert len(calls) == 1  # kept with the cohort
  CohortSource(packed, _Model()).take(np.arange(2))
  assert len(calls) == 2  # another model: checked again

  # A cohort built by hand with writable arrays is checked as each block is taken.
  writable = packing.PackedCohort(
      jax.tree.map(np.array, packed.batches), np.array(packed.mask), packed.client_ids)
  for _ in range(2):
    CohortSource(writable, model).take(np.arange(2))
  assert len(calls) == 4
  writable.batches[0][1, 0, 0, 0] = np.nan  # and a change in place is caught
  with pytest.raises(ValueError, match='NaN'):
    CohortSource(writable, model).take(np.arange(2))


def test_a_kept_check_still_casts_to_the_models_dtypes():
  rng = np.random.default_rng(1)
  packed = pack_cohort([Dataset((rng.normal(size=(4, 3)), np.zeros(4, np.int64))).batch(2)])
  source = CohortSource(packed, _Model())
  (x, y), _ = source.take(np.arange(1))
  assert x.dtype == np.float32 and y.dtype == np.int32
  (x2, _), _ = CohortSource(packed, source.model).take(np.arange(1))
  np.testing.assert_array_equal(x2, x)
  assert x2.dtype == np.float32


def test_the_earlier_name_still_works():
  assert packing.CohortSource is CohortSource
  with pytest.raises(AttributeError, match='no attribute'):
    packing.NoSuchName  # noqa: B018
