"""Client samplers: seeded, reproducible in any call order, and drawing with the right law."""

import numpy as np
import pytest

from fedjax_like.data.sampling import ClientSampler, FixedSampler, UniformSampler, WeightedSampler

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
