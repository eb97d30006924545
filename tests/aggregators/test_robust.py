"""Coordinate-wise median and trimmed mean against NumPy: odd/even cohorts, NaN, padding, FedAvg."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from aggregator_helpers import run_rounds, value_type_of

from fedjax_like.aggregators import MedianFactory, TrimmedMeanFactory

RNG = np.random.default_rng(0)


def make_values(num_clients):
  return {
      'w': RNG.normal(size=(num_clients, 3, 4)).astype(np.float32),
      'b': RNG.standard_cauchy(size=(num_clients, 5)).astype(np.float32),  # heavy tails
  }


def np_trimmed_mean(x, beta):
  n = len(x)
  k = int(np.floor(beta * n))
  s = np.sort(x.astype(np.float64), axis=0)
  return s[k : n - k].mean(axis=0)


@pytest.mark.parametrize('num_clients', [7, 8])
def test_median_matches_numpy(num_clients):
  values = make_values(num_clients)
  process = MedianFactory().create(value_type_of(values))
  assert process.map_reduce is None and not process.is_weighted
  (result,), (measured,), _ = run_rounds(process, [values])
  for key, x in values.items():
    np.testing.assert_allclose(result[key], np.median(x, axis=0), rtol=1e-6)
  assert int(measured['num_clients']) == num_clients


@pytest.mark.parametrize('num_clients,beta', [(10, 0.1), (11, 0.2), (9, 0.0), (10, 0.45)])
def test_trimmed_mean_matches_numpy(num_clients, beta):
  values = make_values(num_clients)
  (result,), _, _ = run_rounds(TrimmedMeanFactory(beta).create(value_type_of(values)), [values])
  for key, x in values.items():
    np.testing.assert_allclose(result[key], np_trimmed_mean(x, beta), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('factory,reference', [
    (MedianFactory(), lambda x: np.median(x, axis=0)),
    (TrimmedMeanFactory(0.2), lambda x: np_trimmed_mean(x, 0.2)),
], ids=['median', 'trimmed_mean'])
def test_non_finite_and_padding_clients_are_left_out(factory, reference):
  values = make_values(9)
  values['w'][2, 0, 0] = np.nan
  values['b'][5, 1] = -np.inf
  mask = np.ones(9, bool)
  mask[7] = False  # padding
  (result,), (measured,), _ = run_rounds(factory.create(value_type_of(values)), [values],
                                         mask=mask)
  keep = np.array([True, True, False, True, True, False, True, False, True])
  for key, x in values.items():
    np.testing.assert_allclose(result[key], reference(x[keep]), rtol=1e-5, atol=1e-6)
  assert int(measured['num_clients']) == 6
  assert int(measured['num_clients_non_finite']) == 2


def test_median_resists_poisoned_clients_the_mean_does_not():
  clean = RNG.normal(loc=1.0, scale=0.1, size=(20, 50)).astype(np.float32)
  poisoned = clean.copy()
  poisoned[:4] = -100.0 * clean[:4]  # 20% scaled and sign-flipped
  values = {'x': poisoned}
  (median,), _, _ = run_rounds(MedianFactory().create(value_type_of(values)), [values])
  (trimmed,), _, _ = run_rounds(TrimmedMeanFactory(0.2).create(value_type_of(values)), [values])
  assert np.abs(median['x'] - 1.0).max() < 0.2
  assert np.abs(trimmed['x'] - 1.0).max() < 0.2
  assert np.abs(poisoned.mean(0) - 1.0).min() > 10


def test_a_round_without_valid_clients_gives_zeros():
  values = {'x': np.full((3, 2), np.nan, np.float32)}
  (result,), (measured,), _ = run_rounds(MedianFactory().create(value_type_of(values)), [values])
  np.testing.assert_array_equal(result['x'], 0.0)
  assert int(measured['num_clients']) == 0


def test_median_in_unweighted_fed_avg_runs_materialized():
  import flax.linen as nn  # noqa: PLC0415

  import fedjax_like as fl  # noqa: PLC0415
  from fedjax_like.data import Dataset  # noqa: PLC0415

  spec = (jax.ShapeDtypeStruct((3,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
  model = fl.models.from_linen(nn.Dense(2, kernel_init=nn.initializers.zeros), spec)
  rng = np.random.default_rng(1)
  data = [Dataset((rng.normal(size=(4, 3)).astype(np.float32),
                   rng.integers(0, 2, 4).astype(np.int32))) for _ in range(5)]
  process = fl.learning.algorithms.build_unweighted_fed_avg(
      model, fl.learning.optimizers.build_sgdm(0.1), model_aggregator=MedianFactory())
  state, metrics = process.next(process.initialize(), [d.batch(4) for d in data])
  # One full batch per client: the update is the coordinate-wise median of -0.1 * gradient.
  def client_delta(x, y):
    p = np.full((4, 2), 0.5)
    p[np.arange(4), y] -= 1.0
    return 0.1 * (x.T @ p / 4)  # w_0 - w_1 with zero weights: lr * gradient
  deltas = np.stack([client_delta(*d.elements) for d in data])
  np.testing.assert_allclose(state.global_model_weights.trainable['kernel'],
                             -np.median(deltas, axis=0), rtol=1e-5, atol=1e-7)
  assert int(metrics['aggregator']['num_clients']) == 5


def test_bad_trim_fraction():
  with pytest.raises(ValueError, match=r'trim_fraction must be in \[0, 0.5\)'):
    TrimmedMeanFactory(0.5)
  with pytest.raises(TypeError, match='needs floating-point values'):
    MedianFactory().create(jax.ShapeDtypeStruct((2,), jnp.int32))


def test_zeroing_around_the_median_composes_through_the_intrinsics():
  from fedjax_like.aggregators import zeroing_factory  # noqa: PLC0415

  values = make_values(7)
  values['w'][0] *= 1000.0
  linf = np.abs(np.concatenate([v.reshape(7, -1) for v in values.values()], 1)).max(1)
  threshold = float(np.sort(linf)[-2]) * 1.01  # only client 0 is above
  process = zeroing_factory(threshold, MedianFactory()).create(value_type_of(values))
  assert process.map_reduce is None
  (result,), (measured,), _ = run_rounds(process, [values])
  zeroed = {k: np.where(np.arange(7).reshape((-1,) + (1,) * (x.ndim - 1)) == 0, 0.0, x)
            for k, x in values.items()}
  for key, x in zeroed.items():
    np.testing.assert_allclose(result[key], np.median(x, axis=0), rtol=1e-6)
  assert int(measured['zeroed_count']) == 1
  assert int(measured['zeroing']['num_clients']) == 7


@pytest.mark.parametrize('n', [1, 5, 33])
def test_the_bitonic_sort_over_clients_matches_numpy(n):
  from fedjax_like.aggregators.robust import sort_over_clients  # noqa: PLC0415

  x = RNG.normal(size=(n, 3, 4)).astype(np.float32)
  x[0, 0, 0] = np.inf
  x[-1, 1, 1] = -np.inf
  x[:, 2, 2] = 1.5  # ties
  np.testing.assert_array_equal(np.asarray(jax.jit(sort_over_clients)(x)), np.sort(x, axis=0))
