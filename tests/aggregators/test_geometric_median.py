"""RFA's geometric median against a NumPy smoothed-Weiszfeld loop: weights, NaN, padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from aggregator_helpers import run_rounds, value_type_of

from fedjax_like.aggregators import GeometricMedianFactory

RNG = np.random.default_rng(5)


def make_values(num_clients):
  return {
      'w': RNG.normal(size=(num_clients, 3, 4)).astype(np.float32),
      'b': RNG.standard_cauchy(size=(num_clients, 5)).astype(np.float32),
  }


def np_weiszfeld(values, alphas, num_iters, eps):
  """Plain float64 loops: the weighted mean, then num_iters smoothed Weiszfeld steps."""
  keys = list(values)
  points = [np.concatenate([values[k][i].reshape(-1) for k in keys]).astype(np.float64)
            for i in range(len(alphas))]
  alphas = np.asarray(alphas, np.float64)
  v = sum(a * x for a, x in zip(alphas, points)) / alphas.sum()
  for _ in range(num_iters):
    betas = [a / max(eps, np.linalg.norm(v - x)) for a, x in zip(alphas, points)]
    v = sum(b * x for b, x in zip(betas, points)) / sum(betas)
  objective = sum(a * np.linalg.norm(v - x) for a, x in zip(alphas, points)) / alphas.sum()
  out, start = {}, 0
  for k in keys:
    size = values[k][0].size
    out[k] = v[start:start + size].reshape(values[k].shape[1:])
    start += size
  return out, objective


@pytest.mark.parametrize('weighted,num_iters', [(True, 4), (False, 1), (True, 10)])
def test_matches_numpy_weiszfeld(weighted, num_iters):
  values = make_values(9)
  weights = RNG.integers(1, 20, size=9).astype(np.float32)
  process = GeometricMedianFactory(num_iters=num_iters, weighted=weighted).create(
      value_type_of(values))
  assert process.map_reduce is None and process.is_weighted == weighted
  (result,), (measured,), _ = run_rounds(process, [values], [weights] if weighted else None)
  expected, objective = np_weiszfeld(values, weights if weighted else np.ones(9), num_iters, 1e-6)
  for key in values:
    np.testing.assert_allclose(result[key], expected[key], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(measured['objective'], objective, rtol=1e-4)


def test_many_passes_reach_the_geometric_median():
  # Points on a line: the geometric median of 1-D points is their (weighted) median.
  values = {'x': np.array([[0.0], [1.0], [2.0], [10.0], [1000.0]], np.float32)}
  process = GeometricMedianFactory(num_iters=25, weighted=False).create(value_type_of(values))
  (result,), _, _ = run_rounds(process, [values])
  np.testing.assert_allclose(result['x'], [2.0], atol=1e-3)


def test_non_finite_padding_and_bad_weights_are_left_out():
  values = make_values(9)
  weights = RNG.integers(1, 20, size=9).astype(np.float32)
  values['w'][1, 0, 0] = np.nan
  weights[3] = np.inf
  mask = np.ones(9, bool)
  mask[7] = False
  keep = np.array([True, False, True, False, True, True, True, False, True])
  process = GeometricMedianFactory().create(value_type_of(values))
  (result,), (measured,), _ = run_rounds(process, [values], [weights], mask=mask)
  kept = {k: x[keep] for k, x in values.items()}
  expected, _ = np_weiszfeld(kept, weights[keep], 4, 1e-6)
  for key in values:
    np.testing.assert_allclose(result[key], expected[key], rtol=1e-4, atol=1e-5)
  assert int(measured['num_clients']) == 6 and int(measured['num_clients_non_finite']) == 2


def test_resists_poisoned_clients():
  clean = RNG.normal(loc=1.0, scale=0.1, size=(20, 50)).astype(np.float32)
  poisoned = clean.copy()
  poisoned[:4] = -100.0 * clean[:4]
  values = {'x': poisoned}
  process = GeometricMedianFactory(num_iters=10, weighted=False).create(value_type_of(values))
  (result,), _, _ = run_rounds(process, [values])
  assert np.abs(result['x'] - 1.0).max() < 0.2


def test_bad_arguments():
  with pytest.raises(ValueError, match='num_iters must be at least 1'):
    GeometricMedianFactory(num_iters=0)
  with pytest.raises(ValueError, match='eps must be positive'):
    GeometricMedianFactory(eps=0.0)
  with pytest.raises(TypeError, match='needs floating-point values'):
    GeometricMedianFactory().create(jax.ShapeDtypeStruct((2,), jnp.int32))
