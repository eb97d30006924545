"""PrivateQuantileEstimationProcess against a NumPy reference: convergence, affine report, noise."""

import math
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from aggregator_helpers import run_rounds

from fedjax_like.aggregators import (
    MeanFactory,
    PrivateQuantileEstimationProcess,
    clipping_factory,
    zeroing_factory,
)
from fedjax_like.core import CLIENTS, FederatedValue

NUM_CLIENTS, ROUNDS = 50, 60


def lognormal_norms(seed, rounds=ROUNDS, clients=NUM_CLIENTS):
  """Per round, client norms from lognormal(mu=1, sigma=0.5): quantile q is exp(1 + 0.5 z_q)."""
  return np.random.default_rng(seed).lognormal(1.0, 0.5, size=(rounds, clients)).astype(np.float32)


def reference_estimates(norms, initial, q, lr, geometric=True):
  """The NumPy reference of the quantile update: the estimate used in each round, then the last."""
  c, used = float(initial), []
  for round_norms in norms:
    used.append(c)
    b = min(1.0, max(0.0, np.mean(round_norms <= c)))
    c = c * math.exp(-lr * (b - q)) if geometric else c - lr * (b - q)
  return np.array(used), c


def run_estimation(process, norms):
  @jax.jit
  def step(state, values):
    return process.next(state, FederatedValue(values, CLIENTS))

  state, reported = process.initialize(), []
  for round_norms in norms:
    reported.append(float(process.report(state)))
    state = step(state, round_norms)
  return np.array(reported), state


@pytest.mark.parametrize('q', [0.2, 0.5, 0.9])
def test_no_noise_converges_to_the_target_quantile(q):
  norms = lognormal_norms(seed=1)
  process = PrivateQuantileEstimationProcess.no_noise(1.0, q, 0.2)
  reported, state = run_estimation(process, norms)
  used, last = reference_estimates(norms, 1.0, q, 0.2)
  np.testing.assert_allclose(reported, used, rtol=1e-4)
  np.testing.assert_allclose(state['current_estimate'], last, rtol=1e-4)
  # Converged: over the last 20 rounds, the fraction of fresh norms below C is q within 0.05, and
  # C is within 15% of the distribution's true quantile.
  fresh = lognormal_norms(seed=2, rounds=20, clients=2000)
  below = np.mean([np.mean(f <= c) for f, c in zip(fresh, reported[-20:])])
  assert abs(below - q) < 0.05, (below, q)
  true_quantile = math.exp(1.0 + 0.5 * statistics.NormalDist().inv_cdf(q))
  assert abs(np.mean(reported[-20:]) / true_quantile - 1) < 0.15


def test_arithmetic_update_matches_reference():
  norms = lognormal_norms(seed=3, rounds=30)
  process = PrivateQuantileEstimationProcess(2.0, 0.5, 0.3, geometric_update=False)
  reported, _ = run_estimation(process, norms)
  used, _ = reference_estimates(norms, 2.0, 0.5, 0.3, geometric=False)
  np.testing.assert_allclose(reported, used, rtol=1e-4)


def test_affine_report_compares_norms_with_the_estimate_itself():
  norms = lognormal_norms(seed=4, rounds=20)
  process = PrivateQuantileEstimationProcess.no_noise(10.0, 0.98, math.log(10.0), 2.0, 1.0)
  reported, _ = run_estimation(process, norms)
  used, _ = reference_estimates(norms, 10.0, 0.98, math.log(10.0))
  np.testing.assert_allclose(reported, 2.0 * used + 1.0, rtol=1e-4)


def vectors_with_norms(norms, dim=6, seed=0, order=2.0):
  """Client values (a pytree) whose global L2 (or L-inf) norms are exactly ``norms``."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(len(norms), dim))
  x /= np.linalg.norm(x, ord=order, axis=1, keepdims=True)
  x = x * norms[:, None]
  return {'w': x[:, :4].astype(np.float32), 'b': x[:, 4:].astype(np.float32)}


def test_adaptive_clipping_and_zeroing_follow_the_reference():
  norms = lognormal_norms(seed=5, rounds=25, clients=20)
  values = [vectors_with_norms(n, seed=i) for i, n in enumerate(norms)]
  weights = [np.ones(20, np.float32)] * len(values)
  clip = PrivateQuantileEstimationProcess.no_noise(1.0, 0.8, 0.2)
  process = clipping_factory(clip, MeanFactory()).create(jax.tree.map(lambda x: x[0], values[0]))
  _, measured, _ = run_rounds(process, values, weights)
  used, _ = reference_estimates(norms, 1.0, 0.8, 0.2)
  got = np.array([m['clipping_norm'] for m in measured])
  np.testing.assert_allclose(got, used, rtol=1e-4)
  counts = np.array([m['clipped_count'] for m in measured])
  np.testing.assert_array_equal(counts, (norms > got[:, None]).sum(1))
  # Zeroing's threshold is 2C + 1 while C tracks the 0.98 quantile of the (L-inf) norms.
  linf_values = [vectors_with_norms(n, seed=i, order=np.inf) for i, n in enumerate(norms)]
  zero = PrivateQuantileEstimationProcess.no_noise(10.0, 0.98, math.log(10.0), 2.0, 1.0)
  process = zeroing_factory(zero, MeanFactory()).create(jax.tree.map(lambda x: x[0], values[0]))
  _, measured, _ = run_rounds(process, linf_values, weights)
  used, _ = reference_estimates(norms, 10.0, 0.98, math.log(10.0))
  got = np.array([m['zeroing_norm'] for m in measured])
  np.testing.assert_allclose(got, 2 * used + 1, rtol=1e-4)


def test_private_estimate_noise_is_reproducible_and_has_the_stated_stddev():
  # All norms equal: without noise b = 1 every round; with noise b = 1 + N(0, s^2)/E before the
  # clip to [0, 1], so at q = 0.5 and a tiny rate, log(C_{t+1}/C_t) = -lr (clip(b) - q).
  stddev, expected, lr = 2.0, 50.0, 1e-3
  norms = np.zeros((400, 50), np.float32) + 1.0
  make = lambda seed: PrivateQuantileEstimationProcess(  # noqa: E731
      10.0, 0.5, lr, below_estimate_stddev=stddev, expected_num_records=expected, seed=seed
  )
  reported, state = run_estimation(make(7), norms)
  again, _ = run_estimation(make(7), norms)
  other, _ = run_estimation(make(8), norms)
  np.testing.assert_array_equal(reported, again)
  assert not np.array_equal(reported, other)
  # Resuming from a saved state continues bit-exactly.
  half, mid_state = run_estimation(make(7), norms[:200])
  rest, _ = run_estimation_from(make(7), mid_state, norms[200:])
  np.testing.assert_array_equal(np.concatenate([half, rest]), reported)
  # Every norm (1.0) is below C (about 10): b = 1 + noise / E, clipped; recover b and check
  # the unclipped half of the noise: the b < 1 draws are half a Gaussian of std s/E.
  b = 0.5 - np.log(reported[1:] / reported[:-1]) / lr
  below_one = b[b < 1 - 1e-3] - 1.0
  assert abs(len(below_one) / len(b) - 0.5) < 0.1
  # E|N(0, sigma)| given negative is sigma sqrt(2/pi): std s/E = 0.04 -> mean about 0.0319
  np.testing.assert_allclose(-below_one.mean(), stddev / expected * math.sqrt(2 / math.pi),
                             rtol=0.15)


def run_estimation_from(process, state, norms):
  @jax.jit
  def step(state, values):
    return process.next(state, FederatedValue(values, CLIENTS))

  reported = []
  for round_norms in norms:
    reported.append(float(process.report(state)))
    state = step(state, round_norms)
  return np.array(reported), state


def test_a_round_without_clients_keeps_the_estimate():
  process = PrivateQuantileEstimationProcess.no_noise(3.0, 0.5, 0.2)

  @jax.jit
  def step(state, values, mask):
    return process.next(state, FederatedValue(values, CLIENTS, mask=mask))

  state = step(process.initialize(), jnp.ones(4), jnp.zeros(4, bool))
  assert float(state['current_estimate']) == 3.0


@pytest.mark.parametrize('kwargs,message', [
    (dict(initial_estimate=0.0), 'initial_estimate must be positive'),
    (dict(target_quantile=1.5), r'target_quantile must be between 0 and 1'),
    (dict(learning_rate=-0.1), 'learning_rate must be positive'),
    (dict(multiplier=0.0), 'multiplier must be positive'),
    (dict(increment=-1.0), 'increment must be nonnegative'),
    (dict(initial_estimate=math.nan), 'initial_estimate must be finite'),
    (dict(initial_estimate='1'), 'initial_estimate must be a float'),
])
def test_no_noise_bad_arguments(kwargs, message):
  args = dict(initial_estimate=1.0, target_quantile=0.5, learning_rate=0.2)
  args.update(kwargs)
  with pytest.raises((ValueError, TypeError), match=message):
    PrivateQuantileEstimationProcess.no_noise(**args)


def test_private_estimate_needs_the_expected_number_of_clients():
  with pytest.raises(ValueError, match='pass the expected number of clients per round'):
    PrivateQuantileEstimationProcess(1.0, 0.5, 0.2, below_estimate_stddev=1.0)
