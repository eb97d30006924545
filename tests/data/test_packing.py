"""Padding clients: appended masked and empty, accepted by validation, which still refuses a real
empty client."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fedjax_like as fl
from fedjax_like.data import Dataset
from fedjax_like.data.packing import PADDING_CLIENT_ID, pack_cohort, pad_cohort, validate_cohort

SPEC = (jax.ShapeDtypeStruct((3,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))


class _Model:
  input_spec = SPEC
  num_outputs = 2


def _cohort(sizes):
  rng = np.random.default_rng(0)
  return pack_cohort([
      Dataset((rng.normal(size=(n, 3)).astype(np.float32), np.zeros(n, np.int32)),
              client_id=f'c{i}').batch(2)
      for i, n in enumerate(sizes)
  ])


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


def test_a_packed_cohort_is_read_only_and_checked_once_per_model(monkeypatch):
  from fedjax_like.data import packing

  packed = _cohort([3, 5])
  with pytest.raises(ValueError, match='read-only'):
    packed.mask[0, 0, 0] = False
  calls = []
  real = packing.validate_cohort
  monkeypatch.setattr(packing, 'validate_cohort', lambda p, m: calls.append(1) or real(p, m))
  model = _Model()
  for _ in range(3):
    source = packing.CohortSource(packed, model)
    source.take(np.arange(2))
  assert len(calls) == 1  # kept with the cohort
  packing.CohortSource(packed, _Model()).take(np.arange(2))
  assert len(calls) == 2  # another model: checked again

  # A cohort built by hand with writable arrays is checked as each block is taken.
  writable = packing.PackedCohort(
      jax.tree.map(np.array, packed.batches), np.array(packed.mask), packed.client_ids)
  for _ in range(2):
    packing.CohortSource(writable, model).take(np.arange(2))
  assert len(calls) == 4
  writable.batches[0][1, 0, 0, 0] = np.nan  # and a change in place is caught
  with pytest.raises(ValueError, match='NaN'):
    packing.CohortSource(writable, model).take(np.arange(2))


def test_a_kept_check_still_casts_to_the_models_dtypes():
  from fedjax_like.data import packing

  rng = np.random.default_rng(1)
  packed = pack_cohort([Dataset((rng.normal(size=(4, 3)), np.zeros(4, np.int64))).batch(2)])
  source = packing.CohortSource(packed, _Model())
  (x, y), _ = source.take(np.arange(1))
  assert x.dtype == np.float32 and y.dtype == np.int32
  (x2, _), _ = packing.CohortSource(packed, source.model).take(np.arange(1))
  np.testing.assert_array_equal(x2, x)
  assert x2.dtype == np.float32
