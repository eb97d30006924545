"""SecureModularSumFactory against NumPy: the sum wraps around, and the wrap is reported."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from aggregator_helpers import run_rounds, value_type_of

from fedjax_like.aggregators import SecureModularSumFactory, build_map_reduce_aggregation

RNG = np.random.default_rng(0)


def fused(process, values):
  return run_rounds(build_map_reduce_aggregation(
      process.initialize, process.map_reduce, process.value_type, False, 'fused'), [values])


@pytest.mark.parametrize('modulus', [7, 2**16, 1000003, 2**31])
def test_sum_wraps_around_modulo_m_and_reports_it(modulus):
  high = min(modulus, 2**31 - 1)
  values = {'a': RNG.integers(0, high, size=(10, 6), dtype=np.int64).astype(np.int32),
            'b': RNG.integers(0, high, size=(10, 2, 2), dtype=np.int64).astype(np.int32)}
  values['a'][3, 0] = -5  # out of range: wraps before the sum
  process = SecureModularSumFactory(modulus).create(value_type_of(values))
  (result,), (measured,), _ = run_rounds(process, [values])
  wrapped = 0
  for key, x in values.items():
    x64 = x.astype(np.int64)
    np.testing.assert_array_equal(result[key], np.mod(np.mod(x64, modulus).sum(0), modulus))
    wrapped += int((np.mod(x64, modulus).sum(0) >= modulus).sum())
  assert int(measured['wrapped_coordinates']) == wrapped
  assert int(measured['out_of_range_clients']) == 1
  jax.tree.map(np.testing.assert_array_equal, fused(process, values)[:2], ([result], [measured]))


def test_no_wrap_when_the_modulus_holds_the_sum():
  values = {'a': RNG.integers(0, 10, size=(8, 5)).astype(np.int32)}
  (result,), (measured,), _ = run_rounds(
      SecureModularSumFactory(100).create(value_type_of(values)), [values])
  np.testing.assert_array_equal(result['a'], values['a'].sum(0))
  assert int(measured['wrapped_coordinates']) == 0


def test_symmetric_range_as_tff():
  m = 50
  values = {'a': RNG.integers(-(m - 1), m, size=(9, 7)).astype(np.int32)}
  (result,), (measured,), _ = run_rounds(
      SecureModularSumFactory(m, symmetric_range=True).create(value_type_of(values)), [values])
  m_eff = 2 * m - 1
  total = np.mod(np.mod(values['a'].astype(np.int64), m_eff).sum(0), m_eff)
  expected = np.where(total >= m, total - m_eff, total)
  np.testing.assert_array_equal(result['a'], expected)
  assert expected.min() < 0  # the data exercises the negative half
  assert set(measured) == {'out_of_range_clients'}


def test_bad_modulus_and_types():
  with pytest.raises(ValueError, match='modulus must be positive'):
    SecureModularSumFactory(0)
  with pytest.raises(ValueError, match='at most 2\\*\\*31'):
    SecureModularSumFactory(2**31 + 1)
  with pytest.raises(TypeError, match='modulus must be an int'):
    SecureModularSumFactory(7.0)
  with pytest.raises(TypeError, match='sums integers of at most 32 bits'):
    SecureModularSumFactory(7).create(jax.ShapeDtypeStruct((2,), jnp.float32))
