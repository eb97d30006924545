"""Client samplers: seeded, reproducible in any call order, and drawing with the right law."""

import numpy as np
import pytest

from fedjax_like.data.sampling import (
    ClientSampler,
    FixedSampler,
    PoissonSampler,
    UniformSampler,
    WeightedSampler,
    binomial_tail,
)

IDS = [f'client_{i:03d}' for i in range(50)]


def test_uniform_is_a_pure_function_of_seed_and_round():
  sampler = UniformSampler(IDS, cohort_size=10, seed=7)
  forward = [sampler.sample(r) for r in range(1, 21)]
  backward = [UniformSampler(IDS, 10, seed=7).sample(r) for r in range(20, 0, -1)][::-1]
  assert forward == backward
  assert sampler.sample(5) == sampler.sample(5)
  assert UniformSampler(IDS, 10, seed=8).sample(5) != sampler.sample(5)
  assert len({tuple(c) for c in forward}) == 20  # rounds differ


def test_uniform_draws_distinct_clients_uniformly():
  sampler = UniformSampler(IDS, cohort_size=10, seed=0)
  counts = dict.fromkeys(IDS, 0)
  num_rounds = 2000
  for r in range(1, num_rounds + 1):
    cohort = sampler.sample(r)
    assert len(cohort) == len(set(cohort)) == 10
    assert set(cohort) <= set(IDS)
    for c in cohort:
      counts[c] += 1
  expected = num_rounds * 10 / len(IDS)  # 400 each
  observed = np.array(list(counts.values()), dtype=float)
  chi2 = ((observed - expected) ** 2 / expected).sum()
  assert chi2 < 100, chi2  # 49 degrees of freedom: p < 1e-5 beyond ~100


def test_weighted_follows_the_weights_and_never_draws_zero_weight():
  weights = {'heavy': 90.0, 'light': 10.0, 'never': 0.0, 'mid': 50.0}
  sampler = WeightedSampler(weights, cohort_size=1, seed=3)
  draws = [sampler.sample(r)[0] for r in range(1, 3001)]
  assert 'never' not in draws
  share = {c: draws.count(c) / len(draws) for c in ('heavy', 'light', 'mid')}
  np.testing.assert_allclose(share['heavy'], 90 / 150, atol=0.03)
  np.testing.assert_allclose(share['light'], 10 / 150, atol=0.03)
  pairs = WeightedSampler(weights, cohort_size=2, seed=3)
  assert all(len(set(pairs.sample(r))) == 2 for r in range(1, 50))
  assert pairs.sample(9) == WeightedSampler(weights, 2, seed=3).sample(9)


def test_fixed_cycles_through_cohorts_starting_at_round_one():
  single = FixedSampler(['a', 'b'])
  assert single.sample(1) == single.sample(99) == ['a', 'b']
  cycle = FixedSampler([['a'], ['b'], ['c']])
  assert [cycle.sample(r) for r in range(1, 7)] == [['a'], ['b'], ['c'], ['a'], ['b'], ['c']]


def test_state_describes_the_sampler_for_resume_checks():
  a, b = UniformSampler(IDS, 10, seed=1), UniformSampler(IDS, 10, seed=1)
  assert a.state() == b.state()
  assert a.state() != UniformSampler(IDS, 10, seed=2).state()
  assert a.state() != UniformSampler(IDS[::-1], 10, seed=1).state()
  assert isinstance(a, ClientSampler)
  assert WeightedSampler({'x': 1.0, 'y': 2.0}, 1).state()['kind'] == 'weighted'


@pytest.mark.parametrize(
    'make, message',
    [
        (lambda: UniformSampler(IDS[:3], cohort_size=4), 'larger than the population'),
        (lambda: UniformSampler([], cohort_size=1), 'empty'),
        (lambda: UniformSampler(['a', 'a'], cohort_size=1), 'unique'),
        (lambda: WeightedSampler({'a': 1.0, 'b': 0.0}, cohort_size=2), 'positive weight'),
        (lambda: WeightedSampler({'a': -1.0}, cohort_size=1), '>= 0'),
    ],
)
def test_bad_samplers_raise_clear_errors(make, message):
  with pytest.raises(ValueError, match=message):
    make()


def test_poisson_includes_each_client_independently_with_probability_q():
  q, rounds = 0.2, 2000
  sampler = PoissonSampler(IDS, q, seed=5)
  counts = dict.fromkeys(IDS, 0)
  sizes = []
  for r in range(1, rounds + 1):
    cohort = sampler.sample(r)
    assert cohort == [c for c in IDS if c in set(cohort)]  # population order, no repeats
    sizes.append(len(cohort))
    for c in cohort:
      counts[c] += 1
  # Each client: Binomial(2000, 0.2), mean 400, sd 17.9; chi-square over 50 clients (49 dof).
  observed = np.array(list(counts.values()), dtype=float)
  expected = rounds * q
  chi2 = ((observed - expected) ** 2 / (expected * (1 - q))).sum()
  assert chi2 < 100, chi2
  # Cohort sizes: Binomial(50, 0.2): mean 10, variance 8 (standard errors 0.063 and ~0.26).
  assert np.mean(sizes) == pytest.approx(10.0, abs=0.3)
  assert np.var(sizes) == pytest.approx(8.0, abs=1.2)
  # Pairwise independence: P(a and b) = q^2 = 0.04 (standard error 0.0044 over 2000 rounds).
  both = sum({'client_000', 'client_001'} <= set(sampler.sample(r)) for r in range(1, rounds + 1))
  assert both / rounds == pytest.approx(q * q, abs=0.015)


def test_poisson_is_a_pure_function_of_seed_and_round():
  sampler = PoissonSampler.with_expected_size(IDS, 10, seed=3)
  assert sampler.sampling_probability == 0.2 and sampler.expected_cohort_size == 10
  forward = [sampler.sample(r) for r in range(1, 30)]
  assert forward == [PoissonSampler(IDS, 0.2, seed=3).sample(r) for r in range(29, 0, -1)][::-1]
  assert PoissonSampler(IDS, 0.2, seed=4).sample(7) != sampler.sample(7)
  assert sampler.state() == PoissonSampler(IDS, 0.2, seed=3).state()
  assert sampler.state()['kind'] == 'poisson'
  assert isinstance(sampler, ClientSampler)


def test_poisson_truncation_keeps_a_uniform_subset_of_the_draw():
  q, cap = 0.5, 20
  full, truncated = PoissonSampler(IDS, q, seed=1), PoissonSampler(IDS, q, seed=1,
                                                                    max_cohort_size=cap)
  kept = dict.fromkeys(IDS, 0)
  drawn = dict.fromkeys(IDS, 0)
  for r in range(1, 801):
    draw, cohort = full.sample(r), truncated.sample(r)
    assert set(cohort) <= set(draw)
    assert len(cohort) == min(len(draw), cap)
    if len(draw) <= cap:
      assert cohort == draw  # untouched below the cap
    for c in draw:
      drawn[c] += 1
    for c in cohort:
      kept[c] += 1
  # Truncation picks uniformly: every client is kept in the same share of its draws (chi-square
  # of kept counts given drawn counts, 49 dof).
  share = sum(kept.values()) / sum(drawn.values())
  observed = np.array([kept[c] for c in IDS], float)
  expected = np.array([drawn[c] * share for c in IDS])
  assert ((observed - expected) ** 2 / (expected * (1 - share))).sum() < 100
  assert truncated.truncation_probability() == pytest.approx(binomial_tail(50, q, cap))
  assert PoissonSampler(IDS, q).truncation_probability() == 0.0


def test_binomial_tail_matches_an_exact_sum():
  from fractions import Fraction
  from math import comb

  # p = a / b: the tail is an exact integer sum over b**n.
  for n, a, b, k in [(50, 1, 5, 10), (50, 1, 2, 20), (800, 24, 800, 45), (10, 9, 10, 9),
                     (10, 9, 10, 5)]:
    exact = Fraction(sum(comb(n, j) * a**j * (b - a) ** (n - j) for j in range(k + 1, n + 1)),
                     b**n)
    assert binomial_tail(n, a / b, k) == pytest.approx(float(exact), rel=1e-9)


def test_poisson_padded_sizes_are_a_short_ladder_within_the_cap():
  sampler = PoissonSampler(IDS, 0.2)
  assert [sampler.padded_size(n) for n in range(0, 14)] == [
      1, 1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 12, 12, 16]
  assert all(n <= sampler.padded_size(n) <= 1.5 * n for n in range(2, 60))
  capped = PoissonSampler(IDS, 0.2, max_cohort_size=14)
  assert capped.padded_size(13) == 14 and capped.padded_size(14) == 14


def test_poisson_rejects_bad_arguments():
  for q in (0.0, -0.1, 1.5, True):
    with pytest.raises(ValueError, match='sampling_probability'):
      PoissonSampler(IDS, q)
  with pytest.raises(ValueError, match='max_cohort_size'):
    PoissonSampler(IDS, 0.2, max_cohort_size=0)
  with pytest.raises(ValueError, match='clients_per_round'):
    PoissonSampler.with_expected_size(IDS, 51)
