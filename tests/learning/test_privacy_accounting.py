"""The privacy accountant against dp-accounting's own accountants, events built here by hand."""

import math

import pytest

dpa = pytest.importorskip('dp_accounting')

from fedjax_like.data.sampling import (  # noqa: E402
    FixedSampler,
    PoissonSampler,
    UniformSampler,
    WeightedSampler,
)
from fedjax_like.learning.privacy_accounting import (  # noqa: E402
    PrivacyAccountant,
    SamplerMismatchError,
    Sampling,
    UnsupportedAccountingError,
    noise_multiplier_for_epsilon,
)

# TFF's "Differential Privacy in TFF" tutorial setting: EMNIST's 3,383 clients, 120 a round.
N, COHORT, Z, ROUNDS, DELTA = 3383, 120, 1.2, 100, 1e-5
IDS = [f'c{i:04d}' for i in range(N)]


def _reference(event, rounds, method, relation=dpa.NeighboringRelation.ADD_OR_REMOVE_ONE):
  accountant = (dpa.rdp.RdpAccountant(neighboring_relation=relation) if method == 'rdp'
                else dpa.pld.PLDAccountant(relation))
  accountant.compose(dpa.SelfComposedDpEvent(event, rounds))
  return accountant.get_epsilon(DELTA)


def test_poisson_rdp_equals_dp_accounting_at_every_round_count():
  accountant = PrivacyAccountant.for_sampler(
      PoissonSampler.with_expected_size(IDS, COHORT), Z, DELTA, 'rdp'
  )
  event = dpa.PoissonSampledDpEvent(COHORT / N, dpa.GaussianDpEvent(Z))
  for rounds in (1, 7, ROUNDS, 1500):
    assert accountant.epsilon(rounds) == pytest.approx(_reference(event, rounds, 'rdp'), abs=1e-6)
  # The tutorial's number (TFF reports about 2 for these settings).
  assert accountant.epsilon(ROUNDS) == pytest.approx(1.99, abs=0.01)


def test_poisson_pld_equals_dp_accounting():
  sampling = Sampling('poisson', N, COHORT)
  accountant = PrivacyAccountant(Z, sampling, DELTA, 'pld')
  event = dpa.PoissonSampledDpEvent(COHORT / N, dpa.GaussianDpEvent(Z))
  assert accountant.epsilon(ROUNDS) == pytest.approx(_reference(event, ROUNDS, 'pld'), abs=1e-6)
  assert accountant.epsilon(ROUNDS) == pytest.approx(1.71, abs=0.01)  # tighter than RDP


def test_fixed_size_sampling_is_replace_one_with_doubled_sensitivity():
  accountant = PrivacyAccountant.for_sampler(UniformSampler(IDS, COHORT), Z, DELTA)
  replace_one = dpa.NeighboringRelation.REPLACE_ONE
  event = dpa.SampledWithoutReplacementDpEvent(N, COHORT, dpa.GaussianDpEvent(Z / 2))
  expected = _reference(event, ROUNDS, 'rdp', replace_one)
  assert accountant.epsilon(ROUNDS) == pytest.approx(expected, abs=1e-6)
  # Composing GaussianDpEvent(z) (sensitivity C, as if add/remove) gives the smaller, wrong 3.56.
  naive = dpa.SampledWithoutReplacementDpEvent(N, COHORT, dpa.GaussianDpEvent(Z))
  assert _reference(naive, ROUNDS, 'rdp', replace_one) == pytest.approx(3.56, abs=0.01)
  assert accountant.epsilon(ROUNDS) > 3.56


def test_truncated_poisson_is_accounted_by_pld_only():
  ids = IDS[:200]
  sampler = PoissonSampler(ids, 0.1, max_cohort_size=24)
  accountant = PrivacyAccountant.for_sampler(sampler, 2.0, DELTA, 'pld')
  event = dpa.TruncatedSubsampledGaussianDpEvent(200, 0.1, 24, 2.0)
  assert accountant.epsilon(20) == pytest.approx(_reference(event, 20, 'pld'), abs=1e-6)
  untruncated = PrivacyAccountant.for_sampler(PoissonSampler(ids, 0.1), 2.0, DELTA, 'pld')
  assert accountant.epsilon(20) >= untruncated.epsilon(20) - 1e-9
  with pytest.raises(UnsupportedAccountingError, match="method='pld'.*without max_cohort_size"):
    PrivacyAccountant.for_sampler(sampler, 1.0, DELTA, 'rdp')


def test_every_round_sampling_is_composed_gaussians():
  accountant = PrivacyAccountant.for_sampler(FixedSampler(IDS[:10]), 5.0, DELTA, 'rdp')
  assert accountant.epsilon(30) == pytest.approx(
      _reference(dpa.GaussianDpEvent(5.0), 30, 'rdp'), abs=1e-6
  )


def test_unsupported_combinations_and_mismatches_are_refused():
  with pytest.raises(UnsupportedAccountingError, match="PLD.*without replacement.*method='rdp'"):
    PrivacyAccountant.for_sampler(UniformSampler(IDS, COHORT), Z, DELTA, 'pld')
  with pytest.raises(UnsupportedAccountingError, match='WeightedSampler'):
    PrivacyAccountant.for_sampler(WeightedSampler(dict.fromkeys(IDS, 1.0), COHORT), Z, DELTA)
  poisson = PrivacyAccountant(Z, Sampling('poisson', N, COHORT), DELTA)
  poisson.check_sampler(PoissonSampler.with_expected_size(IDS, COHORT, seed=4))  # matches
  with pytest.raises(SamplerMismatchError, match='Poisson.*UniformSampler.*fixed-size'):
    poisson.check_sampler(UniformSampler(IDS, COHORT))
  with pytest.raises(SamplerMismatchError, match='truncated'):
    poisson.check_sampler(PoissonSampler.with_expected_size(IDS, COHORT, max_cohort_size=150))
  with pytest.raises(ValueError, match='delta'):
    PrivacyAccountant(Z, Sampling('poisson', N, COHORT), 0.0)


def test_edge_cases():
  accountant = PrivacyAccountant(0.0, Sampling('poisson', N, COHORT), DELTA)
  assert accountant.epsilon(0) == 0.0
  assert accountant.epsilon(3) == math.inf


def test_calibration_meets_the_target_within_its_tolerance():
  target, tolerance = 2.0, 1e-3
  z = noise_multiplier_for_epsilon(target, DELTA, ROUNDS, COHORT, N, tolerance=tolerance)
  sampling = Sampling('poisson', N, COHORT)
  assert PrivacyAccountant(z, sampling, DELTA).epsilon(ROUNDS) <= target
  assert PrivacyAccountant(z - tolerance, sampling, DELTA).epsilon(ROUNDS) > target
  with pytest.raises(ValueError, match='No noise multiplier'):
    noise_multiplier_for_epsilon(1e-4, DELTA, ROUNDS, COHORT, N, max_noise_multiplier=8.0)
