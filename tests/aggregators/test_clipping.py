"""clipping_factory and zeroing_factory against NumPy: norms, counts, weights, NaNs, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from aggregator_helpers import WithoutMapReduce, run_rounds, value_type_of

from fedjax_like.aggregators import (
    EstimationMapReduceForm,
    MeanFactory,
    SumFactory,
    UnweightedMeanFactory,
    build_map_reduce_estimation,
    clipping_factory,
    zeroing_factory,
)
from fedjax_like.core import cohort

RNG = np.random.default_rng(0)
NUM_CLIENTS = 7
# Norms spread over [0.3, 6]: some clients clipped at C=2, some not.
SCALES = np.array([0.1, 0.5, 1.0, 2.0, 0.3, 1.5, 0.05], np.float32)
VALUES = {
    'kernel': (RNG.normal(size=(NUM_CLIENTS, 4, 3)) * SCALES[:, None, None]).astype(np.float32),
    'bias': (RNG.normal(size=(NUM_CLIENTS, 3)) * SCALES[:, None]).astype(np.float32),
}
WEIGHTS = RNG.uniform(0.5, 3.0, size=NUM_CLIENTS).astype(np.float32)
VALUE_TYPE = value_type_of(VALUES)


def flat(values):
  """Client values as float64 rows ``[clients, all coordinates]``."""
  leaves = jax.tree.leaves(values)
  return np.concatenate([np.asarray(x, np.float64).reshape(len(x), -1) for x in leaves], axis=1)


def np_weighted_mean(rows, weights):
  return (weights[:, None] * rows).sum(0) / weights.sum()


# ----- clipping --------------------------------------------------------------------------------


@pytest.mark.parametrize('strategy', ['vmap', 'sequential'])
def test_clipping_matches_numpy(strategy):
  clip = 2.0
  process = clipping_factory(clip, MeanFactory()).create(VALUE_TYPE)
  assert process.is_weighted and process.map_reduce is not None
  with cohort.execution(strategy):
    (result,), (measured,), _ = run_rounds(process, [VALUES], [WEIGHTS])
  rows = flat(VALUES)
  norms = np.linalg.norm(rows, axis=1)
  assert 0 < (norms > clip).sum() < NUM_CLIENTS  # the data exercises both branches
  clipped = rows * np.minimum(1.0, clip / norms)[:, None]
  np.testing.assert_allclose(flat(jax.tree.map(lambda x: x[None], result))[0],
                             np_weighted_mean(clipped, WEIGHTS.astype(np.float64)), rtol=1e-5)
  assert int(measured['clipped_count']) == int((norms > clip).sum())
  np.testing.assert_allclose(measured['clipping_norm'], clip)
  np.testing.assert_allclose(measured['clipping']['mean_weight'], WEIGHTS.sum(), rtol=1e-6)
  assert set(measured) == {'clipping', 'clipping_norm', 'clipped_count'}


def test_clipping_unweighted_inner_gives_unweighted_factory():
  factory = clipping_factory(1.0, UnweightedMeanFactory())
  assert not factory.is_weighted
  (result,), (measured,), _ = run_rounds(factory.create(VALUE_TYPE), [VALUES])
  rows = flat(VALUES)
  norms = np.linalg.norm(rows, axis=1)
  expected = (rows * np.minimum(1.0, 1.0 / norms)[:, None]).mean(0)
  np.testing.assert_allclose(flat(jax.tree.map(lambda x: x[None], result))[0], expected, rtol=1e-5)
  assert int(measured['clipped_count']) == int((norms > 1.0).sum())


def test_clipping_sum_inner():
  (result,), _, _ = run_rounds(clipping_factory(1.5, SumFactory()).create(VALUE_TYPE), [VALUES])
  rows = flat(VALUES)
  norms = np.linalg.norm(rows, axis=1)
  expected = (rows * np.minimum(1.0, 1.5 / norms)[:, None]).sum(0)
  np.testing.assert_allclose(flat(jax.tree.map(lambda x: x[None], result))[0], expected, rtol=1e-5)


def test_norm_is_computed_in_float32_for_half_precision_leaves():
  # 300^2 overflows float16 (max 65504): a float16 norm would be inf and zero the value.
  values = {'h': np.full((2, 3), 300.0, np.float16), 'f': np.ones((2, 2), np.float32)}
  clip = 1000.0
  process = clipping_factory(clip, SumFactory()).create(value_type_of(values))
  (result,), (measured,), _ = run_rounds(process, [values])
  assert int(measured['clipped_count']) == 0
  np.testing.assert_allclose(np.asarray(result['h'], np.float32), 600.0)
  assert result['h'].dtype == np.float16


# ----- zeroing ---------------------------------------------------------------------------------


@pytest.mark.parametrize('norm_order', [1.0, 2.0, math.inf])
def test_zeroing_matches_numpy_and_keeps_the_weight(norm_order):
  rows = flat(VALUES)
  norms = np.linalg.norm(rows, ord=norm_order, axis=1)
  threshold = float(np.median(norms))  # about half the clients zeroed
  process = zeroing_factory(threshold, MeanFactory(), norm_order=norm_order).create(VALUE_TYPE)
  (result,), (measured,), _ = run_rounds(process, [VALUES], [WEIGHTS])
  keep = norms <= threshold
  expected = np_weighted_mean(rows * keep[:, None], WEIGHTS.astype(np.float64))  # weights kept
  np.testing.assert_allclose(flat(jax.tree.map(lambda x: x[None], result))[0], expected,
                             rtol=1e-5, atol=1e-7)
  assert int(measured['zeroed_count']) == int((~keep).sum())
  np.testing.assert_allclose(measured['zeroing_norm'], threshold, rtol=1e-7)
  np.testing.assert_allclose(measured['zeroing']['mean_weight'], WEIGHTS.sum(), rtol=1e-6)
  assert set(measured) == {'zeroing', 'zeroing_norm', 'zeroed_count'}


def test_zeroing_default_norm_is_l_infinity():
  # One coordinate of 3 and all others tiny: L-inf 3 > Z = 2.5, but the L1 norm of client 1 is
  # larger than client 0's, which is not zeroed.
  values = {'x': np.array([[2.0, 2.0, 2.0, 2.0], [3.0, 0.0, 0.0, 0.0]], np.float32)}
  (result,), (measured,), _ = run_rounds(
      zeroing_factory(2.5, SumFactory()).create(value_type_of(values)), [values]
  )
  np.testing.assert_array_equal(result['x'], [2.0, 2.0, 2.0, 2.0])
  assert int(measured['zeroed_count']) == 1


# ----- non-finite values, padding, the intrinsics path -----------------------------------------


@pytest.mark.parametrize('make', [
    lambda inner: clipping_factory(2.0, inner),
    lambda inner: zeroing_factory(50.0, inner),
], ids=['clipping', 'zeroing'])
def test_non_finite_values_are_zeroed_and_counted(make):
  values = jax.tree.map(np.copy, VALUES)
  values['kernel'][1, 0, 0] = np.nan
  values['bias'][4, 2] = np.inf
  process = make(SumFactory()).create(VALUE_TYPE)
  (result,), (measured,), _ = run_rounds(process, [values])
  rows = flat(VALUES)
  norms = np.linalg.norm(rows, axis=1)
  finite = np.ones(NUM_CLIENTS, bool)
  finite[[1, 4]] = False
  if 'clipped_count' in measured:
    changed = (norms > 2.0) | ~finite
    kept = np.where(finite[:, None], rows * np.minimum(1.0, 2.0 / norms)[:, None], 0.0)
    count = measured['clipped_count']
  else:
    changed = ~finite
    kept = rows * finite[:, None]
    count = measured['zeroed_count']
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(result))
  np.testing.assert_allclose(flat(jax.tree.map(lambda x: x[None], result))[0], kept.sum(0),
                             rtol=1e-5, atol=1e-6)
  assert int(count) == int(changed.sum())


def test_padding_clients_are_not_counted():
  mask = np.array([True, True, True, False, True, False, True])
  process = clipping_factory(0.5, MeanFactory()).create(VALUE_TYPE)
  (result,), (measured,), _ = run_rounds(process, [VALUES], [WEIGHTS], mask=mask)
  rows, w = flat(VALUES)[mask], WEIGHTS[mask].astype(np.float64)
  norms = np.linalg.norm(rows, axis=1)
  expected = np_weighted_mean(rows * np.minimum(1.0, 0.5 / norms)[:, None], w)
  np.testing.assert_allclose(flat(jax.tree.map(lambda x: x[None], result))[0], expected, rtol=1e-5)
  assert int(measured['clipped_count']) == int((norms > 0.5).sum())


def mean_norm_process(initial):
  """An adaptive norm for the tests: next round's norm is this round's mean client norm."""
  form = EstimationMapReduceForm(
      prepare=lambda state: (),
      work=lambda prepared, norm: (norm, jnp.ones((), jnp.float32)),
      update=lambda state, summed: summed[0] / summed[1],
  )
  return build_map_reduce_estimation(
      lambda: jnp.asarray(initial, jnp.float32), form, lambda state: state, 'mean_norm'
  )


@pytest.mark.parametrize('without_map_reduce', [False, True], ids=['map_reduce', 'intrinsics'])
def test_adaptive_norm_sees_each_clients_norm(without_map_reduce):
  inner = WithoutMapReduce() if without_map_reduce else MeanFactory()
  process = clipping_factory(mean_norm_process(1.0), inner).create(VALUE_TYPE)
  assert (process.map_reduce is None) == without_map_reduce
  second = jax.tree.map(lambda x: 3.0 * x, VALUES)
  results, measured, state = run_rounds(process, [VALUES, second], [WEIGHTS, WEIGHTS])
  clip = 1.0
  for values, result, m in zip([VALUES, second], results, measured):
    rows = flat(values)
    norms = np.linalg.norm(rows, axis=1)
    np.testing.assert_allclose(m['clipping_norm'], clip, rtol=1e-5)
    assert int(m['clipped_count']) == int((norms > clip).sum())
    expected = np_weighted_mean(rows * np.minimum(1.0, clip / norms)[:, None], WEIGHTS)
    np.testing.assert_allclose(flat(jax.tree.map(lambda x: x[None], result))[0], expected,
                               rtol=1e-5)
    clip = norms.mean()  # the norm the next round uses: the mean of the unclipped norms
  np.testing.assert_allclose(state['clipping_norm'], clip, rtol=1e-5)


def test_intrinsics_path_equals_map_reduce_path():
  outs = []
  for inner in (MeanFactory(), WithoutMapReduce()):
    process = zeroing_factory(1.0, clipping_factory(0.7, inner), norm_order=2.0).create(VALUE_TYPE)
    outs.append(run_rounds(process, [VALUES], [WEIGHTS])[:2])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), outs[0], outs[1])


# ----- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize('bad', [0.0, -1.0, math.nan, math.inf])
def test_non_positive_or_non_finite_norm_is_refused(bad):
  with pytest.raises(ValueError, match='clipping_norm must be positive and finite'):
    clipping_factory(bad, MeanFactory())
  with pytest.raises(ValueError, match='zeroing_norm must be positive and finite'):
    zeroing_factory(bad, MeanFactory())


def test_bad_arguments_are_refused_with_the_fix():
  with pytest.raises(TypeError, match='float .a fixed norm. or an EstimationProcess'):
    clipping_factory('1.0', MeanFactory())
  with pytest.raises(TypeError, match='inner_agg_factory must be an aggregation factory'):
    clipping_factory(1.0, MeanFactory().create(VALUE_TYPE))
  with pytest.raises(ValueError, match=r'norm_order must be 1.0, 2.0 or math.inf'):
    zeroing_factory(1.0, MeanFactory(), norm_order=3.0)
  with pytest.raises(TypeError, match='must be an unweighted factory'):
    clipping_factory(1.0, MeanFactory(), clipped_count_sum_factory=MeanFactory())
  no_ints = r'clipping_factory needs floating-point values; got the value type int32\[3\]'
  with pytest.raises(TypeError, match=no_ints):
    clipping_factory(1.0, SumFactory()).create(jax.ShapeDtypeStruct((3,), jnp.int32))
