"""SecureSumFactory against NumPy: integer and float modes, clipping counts, adaptive bounds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from aggregator_helpers import run_rounds, value_type_of

from fedjax_like.aggregators import (
    PrivateQuantileEstimationProcess,
    SecureSumFactory,
    build_map_reduce_aggregation,
)

RNG = np.random.default_rng(0)


def fused(process, values):
  """The map-reduce form run by hand: prepare, work per client, plain sum, report."""
  form = process.map_reduce
  return run_rounds(
      build_map_reduce_aggregation(process.initialize, form, process.value_type, False, 'fused'),
      [values],
  )


def test_integer_mode_clips_shifts_and_sums_exactly():
  values = {'a': RNG.integers(-30, 30, size=(9, 4)).astype(np.int32),
            'b': RNG.integers(-30, 30, size=(9, 2, 3)).astype(np.int32)}
  factory = SecureSumFactory(20, -10)
  assert factory.secagg_bitwidth == 5  # ceil(log2(31))
  process = factory.create(value_type_of(values))
  (result,), (measured,), _ = run_rounds(process, [values])
  for key, x in values.items():
    np.testing.assert_array_equal(result[key], np.clip(x, -10, 20).sum(0))
    assert result[key].dtype == np.int32
  maxes = np.max(np.concatenate([v.reshape(9, -1) for v in values.values()], 1), 1)
  mins = np.min(np.concatenate([v.reshape(9, -1) for v in values.values()], 1), 1)
  assert int(measured['secure_upper_clipped_count']) == int((maxes > 20).sum())
  assert int(measured['secure_lower_clipped_count']) == int((mins < -10).sum())
  assert int(measured['secure_upper_threshold']) == 20
  assert int(measured['secure_lower_threshold']) == -10
  # the fused map-reduce form (plain sums of the same limbs) agrees bit for bit
  jax.tree.map(np.testing.assert_array_equal, fused(process, values)[:2], ([result], [measured]))


def test_float_mode_quantizes_to_32_bits_within_the_range_precision():
  values = {'w': RNG.normal(scale=2.0, size=(12, 50)).astype(np.float32)}
  bound = 3.0
  process = SecureSumFactory(bound).create(value_type_of(values))
  (result,), (measured,), _ = run_rounds(process, [values])
  expected = np.clip(values['w'].astype(np.float64), -bound, bound).sum(0)
  # float32 encoding: about 1e-7 of the range (2 * bound) per client
  np.testing.assert_allclose(result['w'], expected, atol=12 * 2 * bound * 2e-7)
  assert int(measured['secure_upper_clipped_count']) == int((values['w'].max(1) > bound).sum())
  assert int(measured['secure_lower_clipped_count']) == int((values['w'].min(1) < -bound).sum())
  jax.tree.map(np.testing.assert_array_equal, fused(process, values)[:2], ([result], [measured]))


def test_adaptive_bound_follows_the_quantile_of_the_largest_absolute_coordinate():
  bound = PrivateQuantileEstimationProcess.no_noise(50.0, 0.95, 1.0, multiplier=2.0)
  values = [{'w': RNG.normal(scale=1.0, size=(20, 8)).astype(np.float32)} for _ in range(6)]
  process = SecureSumFactory(bound).create(value_type_of(values[0]))
  results, measured, _ = run_rounds(process, values)
  c = 50.0
  for x, result, m in zip(values, results, measured):
    np.testing.assert_allclose(m['secure_upper_threshold'], 2 * c, rtol=1e-5)
    np.testing.assert_allclose(m['secure_lower_threshold'], -2 * c, rtol=1e-5)
    clipped = np.clip(x['w'], -2 * c, 2 * c).sum(0)
    np.testing.assert_allclose(result['w'], clipped, atol=20 * 4 * c * 2e-7)
    absmax = np.abs(x['w']).max(1)
    c = c * np.exp(-1.0 * (np.mean(absmax <= c) - 0.95))


@pytest.mark.parametrize('args,error,message', [
    ((0,), ValueError, 'alone must be positive'),
    ((-1.0,), ValueError, 'alone must be positive'),
    ((1.0, 2.0), ValueError, r'must be larger than lower_bound_threshold'),
    ((1, 0.5), TypeError, 'must be of the same kind'),
    (('1',), TypeError, 'must be an int'),
    ((2**31, -1), ValueError, 'Narrow the bounds'),
])
def test_bad_bounds(args, error, message):
  with pytest.raises(error, match=message):
    SecureSumFactory(*args)


def test_value_type_must_match_the_mode():
  with pytest.raises(TypeError, match='Pass float thresholds'):
    SecureSumFactory(10).create(jax.ShapeDtypeStruct((2,), jnp.float32))
  with pytest.raises(TypeError, match='Pass int thresholds'):
    SecureSumFactory(1.0).create(jax.ShapeDtypeStruct((2,), jnp.int32))
  with pytest.raises(TypeError, match='one dtype'):
    SecureSumFactory(1.0).create({'a': jax.ShapeDtypeStruct((2,), jnp.float32),
                                  'b': jax.ShapeDtypeStruct((2,), jnp.float16)})
