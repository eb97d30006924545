"""DP-FTRL by banded matrix factorization: the strategy, the correlated noise's covariance, the
clipped sum, reproducibility, the privacy event, and a round of FedAvg."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip('jax_privacy')

from aggregator_helpers import run_rounds, value_type_of  # noqa: E402

from fedjax_like.aggregators.matrix_factorization import (  # noqa: E402
    BandedMatrixFactorizationFactory,
)


def reference_strategy(n, bands):
  """Fichtenberger et al.'s Toeplitz coefficients, truncated to ``bands``, columns normalized."""
  coefs = np.ones(bands)
  for k in range(1, bands):
    coefs[k] = coefs[k - 1] * (2 * k - 1) / (2 * k)
  b = np.zeros((n, n))
  for i in range(n):
    for j in range(max(0, i - bands + 1), i + 1):
      b[i, j] = coefs[i - j]
  return b / np.linalg.norm(b, axis=0)


def test_strategy_is_the_column_normalized_banded_toeplitz_matrix():
  factory = BandedMatrixFactorizationFactory(1.0, 10, 1.0, num_rounds=7, num_bands=3, seed=0)
  np.testing.assert_allclose(factory.strategy_matrix(), reference_strategy(7, 3), atol=1e-6)


@pytest.mark.parametrize('bands', [1, 3])
def test_noise_has_the_covariance_of_the_factorization(bands):
  # Zero updates: round t returns z C (B^{-1} W)_t / E, so the d coordinates are d independent
  # samples of a T-vector with covariance s^2 B^{-1} B^{-T}, s = z C / E. Whitened by B / s they
  # must be i.i.d. N(0, 1): sample variances within 5 standard errors (sqrt(2 / d)) of 1,
  # correlations within 5 / sqrt(d) of 0.
  rounds, dim, z, clip, e = 6, 40_000, 1.3, 2.0, 4.0
  factory = BandedMatrixFactorizationFactory(z, e, clip, num_rounds=rounds, num_bands=bands, seed=3)
  zeros = {'w': jnp.zeros((2, dim - 10)), 'b': jnp.zeros((2, 10))}
  process = factory.create(value_type_of(zeros))
  results, _, _ = run_rounds(process, [zeros] * rounds)
  noise = np.stack([np.concatenate([r['w'], r['b']]) for r in results]).astype(np.float64)
  s = z * clip / e
  whitened = reference_strategy(rounds, bands) @ noise / s
  covariance = whitened @ whitened.T / dim
  np.testing.assert_allclose(np.diag(covariance), 1.0, atol=5 * math.sqrt(2 / dim))
  off = covariance[~np.eye(rounds, dtype=bool)]
  assert np.max(np.abs(off)) < 5 / math.sqrt(dim)
  # Unwhitened: the empirical covariance is S = s^2 B^{-1} B^{-T} (correlated for b > 1); an
  # entry's standard error is sqrt((S_ii S_jj + S_ij^2) / d) <= max|S| sqrt(2 / d).
  b_inv = np.linalg.inv(reference_strategy(rounds, bands))
  expected = s * s * b_inv @ b_inv.T
  np.testing.assert_allclose(noise @ noise.T / dim, expected,
                             atol=5 * np.max(np.abs(expected)) * math.sqrt(2 / dim))
  if bands == 1:
    np.testing.assert_allclose(np.std(noise, axis=1), s, rtol=5 * math.sqrt(0.5 / dim))


def test_without_noise_the_result_is_the_clipped_sum_over_e():
  rng = np.random.default_rng(0)
  values = [{'w': rng.normal(size=(5, 3)).astype(np.float32) * 2} for _ in range(3)]
  factory = BandedMatrixFactorizationFactory(0.0, 4.0, 1.5, num_rounds=3, num_bands=2, seed=0)
  results, measurements, _ = run_rounds(factory.create(value_type_of(values[0])), values)
  for values_t, result in zip(values, results, strict=True):
    x = values_t['w'].astype(np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    clipped = x * np.minimum(1.0, 1.5 / norms)
    np.testing.assert_allclose(result['w'], clipped.sum(0) / 4.0, rtol=1e-5, atol=1e-6)
  assert measurements[0] == {'dp_query_metrics': {}, 'dp': ()}


def test_noise_is_reproducible_from_the_seed_and_resumes_and_stops_after_num_rounds():
  zeros = {'w': jnp.zeros((3, 8))}
  vt = value_type_of(zeros)

  def run(seed, rounds, state=None):
    process = BandedMatrixFactorizationFactory(1.0, 3, 1.0, 4, 2, seed=seed).create(vt)
    return run_rounds(process, [zeros] * rounds, state=state)

  straight, _, _ = run(7, 5)  # one round past num_rounds = 4
  first, _, state = run(7, 2)
  rest, _, _ = run(7, 2, state=state)
  for a, b in zip(straight[:4], first + rest, strict=True):
    np.testing.assert_array_equal(a['w'], b['w'])
  assert np.isnan(straight[4]['w']).all() and np.isfinite(straight[3]['w']).all()
  assert not np.allclose(run(8, 1)[0][0]['w'], straight[0]['w'])


def test_dp_event_is_the_gaussian_mechanism_at_the_min_separation_sensitivity():
  dpa = pytest.importorskip('dp_accounting')
  from jax_privacy.matrix_factorization import banded

  factory = BandedMatrixFactorizationFactory(2.0, 10, 1.0, num_rounds=12, num_bands=3, seed=0)
  assert factory.dp_event(1) == dpa.GaussianDpEvent(2.0)
  assert factory.dp_event(4) == dpa.GaussianDpEvent(1.0)
  # Participations 3 apart touch columns with disjoint supports: ||B sum_j e_j|| = sqrt(k).
  b = reference_strategy(12, 3)
  for start in range(3):
    rounds = list(range(start, 12, 3))
    assert np.linalg.norm(b[:, rounds].sum(1)) == pytest.approx(math.sqrt(len(rounds)))
  assert banded.minsep_sensitivity_squared(factory.strategy, min_sep=3) == 4
  with pytest.raises(ValueError, match=r'max_participations must be in \[1, 4\]'):
    factory.dp_event(5)


@pytest.mark.parametrize('kwargs,message', [
    (dict(noise_multiplier=-1.0), 'noise_multiplier'),
    (dict(l2_norm_clip=0.0), 'l2_norm_clip'),
    (dict(clients_per_round=0), 'clients_per_round'),
    (dict(num_bands=5), r'num_bands must be in \[1, num_rounds=4\]'),
    (dict(num_rounds=0), 'num_rounds'),
])
def test_bad_arguments(kwargs, message):
  args = dict(noise_multiplier=1.0, clients_per_round=5, l2_norm_clip=1.0, num_rounds=4)
  with pytest.raises(ValueError, match=message):
    BandedMatrixFactorizationFactory(**dict(args, **kwargs))


def test_runs_inside_unweighted_fed_avg_and_a_weighted_builder_refuses_it():
  import fedjax_like as fl

  model = fl.models.from_linen(
      nn.Dense(2),
      input_spec=(jax.ShapeDtypeStruct((3,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32)))
  factory = BandedMatrixFactorizationFactory(0.5, 2, 1.0, num_rounds=2, num_bands=2, seed=1)
  process = fl.learning.algorithms.build_unweighted_fed_avg(
      model, fl.learning.optimizers.build_sgdm(0.1), model_aggregator=factory)
  rng = np.random.default_rng(0)
  data = [fl.data.Dataset((rng.normal(size=(6, 3)).astype(np.float32),
                           rng.integers(0, 2, 6).astype(np.int32)), client_id=f'c{i}').batch(3)
          for i in range(2)]
  state = process.initialize()
  for _ in range(2):
    state, _ = process.next(state, data)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.global_model_weights))
  with pytest.raises(TypeError, match='unweighted.*build_unweighted_fed_avg'):
    fl.learning.algorithms.build_weighted_fed_avg(
        model, fl.learning.optimizers.build_sgdm(0.1), model_aggregator=factory)
