"""A small instance of benchmarks/poisoning.py: under a scaled attack the median keeps FedAvg's
accuracy and the plain mean loses it (3 rounds, logistic model, 2 attackers in cohorts of 10)."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from benchmarks import poisoning  # noqa: E402

SMALL = dict(rounds=3, num_clients=20, alpha=1.0, cohort=10, model='logistic', log=lambda s: None)


def test_median_resists_the_scaled_attack_the_mean_does_not():
  pairs = [('mean', 'none'), ('mean', 'scaled'), ('median', 'scaled')]
  results = poisoning.run(pairs=pairs, **SMALL)
  mean, median = results['mean'], results['median']
  assert mean['none'] > 0.5  # the clean run learns
  assert mean['scaled'] < mean['none'] - 0.3
  assert median['scaled'] > mean['none'] - 0.1


def test_the_wrapper_corrupts_exactly_a_fifth_of_the_cohort():
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  from fedjax_like.aggregators import SumFactory  # noqa: PLC0415
  from fedjax_like.core import CLIENTS, FederatedValue  # noqa: PLC0415

  values = {'x': np.ones((10, 3), np.float32)}
  process = poisoning.PoisonedUpdates(SumFactory(), 'scaled', seed=3).create(
      {'x': jax.ShapeDtypeStruct((3,), np.float32)})
  state = process.initialize()
  values['x'][:, 0] = np.arange(10)  # tells the clients apart
  attackers = []
  for _ in range(2):
    out = process.next(state, FederatedValue(values, CLIENTS))
    state = out.state
    total = np.asarray(out.result.value['x'])
    np.testing.assert_allclose(total[1:], 8 * 1.0 + 2 * 100.0)  # 8 honest, 2 scaled x100
    attackers.append((total[0] - 45.0) / 99.0)  # the attackers' indices, summed
  assert attackers[0] != attackers[1]  # drawn afresh each round
