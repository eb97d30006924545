"""The driver reaches every algorithm and aggregator: one real round each, built from a config."""

import math

import jax
import numpy as np
import pytest

from fedjax_like.learning import algorithms
from fedjax_like.simulation import experiment, processes
from fedjax_like.simulation.config import ConfigError, load_config
from fedjax_like.simulation.loop import run_training_process

SMALL = [
    ('data.num_clients', '12'), ('training.clients_per_round', '3'), ('training.num_rounds', '1'),
    ('training.client_epochs', '1'), ('training.batch_size', '10'),
    ('training.max_client_examples', '20'), ('training.execution', 'sequential'),
    ('evaluation.every', '0'),
]  # fmt: skip

# (algorithm, aggregator kind, process name, a metric the aggregator reports, run a round). A
# round is compiled and run once per builder; variants of a builder (weighting, FedOpt's variant)
# are built only (FedAvg's DP round runs through the CLI in test_cli.py; the secure aggregator's
# rounds are tested in tests/learning/test_model_update_aggregator.py).
CASES = [
    ('fed_avg', 'robust', 'fed_avg', None, False),
    ('fed_avg_unweighted', 'dp', 'fed_avg', None, False),  # run by test_cli's DP run
    ('fed_prox', 'robust', 'weighted_fed_prox', 'aggregator/zeroing/clipping_norm', True),
    ('fed_prox_unweighted', 'mean', 'unweighted_fed_prox', None, False),
    ('fed_adam', 'mean', 'fed_adam', None, True),
    ('fed_yogi', 'robust', 'fed_yogi', None, False),
    ('fed_adagrad', 'mean', 'fed_adagrad', None, False),
    ('fed_sgd', 'robust', 'fed_sgd', 'aggregator/zeroing_norm', True),
    ('scaffold', 'dp', 'scaffold', None, False),
    ('scaffold', 'mean', 'scaffold', None, True),
    ('mime_lite', 'mean', 'mime_lite', None, True),
    ('mime_lite_unweighted', 'secure', 'mime_lite', None, False),
    ('fed_avg', 'secure', 'fed_avg', None, False),
    ('fed_avg', 'compression', 'fed_avg', None, False),
    ('fed_avg_unweighted', 'median', 'fed_avg', 'aggregator/num_clients_non_finite', True),
    ('fed_avg_unweighted', 'trimmed_mean', 'fed_avg', None, False),
    ('fed_avg_unweighted', 'krum', 'fed_avg', None, False),
    ('fed_avg_unweighted', 'geometric_median', 'fed_avg', None, False),
]


def _config(*overrides):
  return load_config(None, SMALL + [tuple(o.split('=', 1)) for o in overrides])


@pytest.mark.parametrize('algorithm,kind,name,metric,run', CASES,
                         ids=[f'{a}-{k}' for a, k, *_ in CASES])
def test_each_algorithm_and_aggregator_runs_a_round_from_the_config(
    algorithm, kind, name, metric, run
):
  overrides = [f'training.algorithm={algorithm}', f'aggregator.kind={kind}',
               'fed_prox.proximal_strength=0.1']
  if kind == 'dp':
    overrides += ['aggregator.noise_multiplier=0.2', 'training.sampling=poisson']
  exp = experiment.build_experiment(_config(*overrides))
  assert name in exp.process.name
  if not run:
    return
  state = exp.process.initialize()
  result = run_training_process(
      exp.process, exp.train_data, exp.sampler, 1, client_preprocess=exp.client_preprocess,
      progress='none', initial_state=state, privacy_accountant=exp.privacy_accountant,
  )
  (record,) = result.history
  assert record['client_work/train/num_examples'] > 0
  assert math.isfinite(record['client_work/train/loss'])
  if metric is not None:
    assert metric in record, sorted(record)
  assert ('privacy/epsilon' in record) == (kind == 'dp')
  before = jax.tree.leaves(state.global_model_weights)
  after = jax.tree.leaves(result.state.global_model_weights)
  assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))


def test_algorithm_options_reach_the_builders(monkeypatch):
  seen = {}

  def spy(name):
    real = getattr(algorithms, name)

    def wrapper(*args, **kwargs):
      seen[name] = (args, kwargs)
      return real(*args, **kwargs)

    monkeypatch.setattr(algorithms, name, wrapper)

  for name in ('build_weighted_fed_prox', 'build_fed_opt', 'build_scaffold'):
    spy(name)
  experiment.build_experiment(_config('training.algorithm=fed_prox',
                                      'fed_prox.proximal_strength=0.25'))
  assert seen['build_weighted_fed_prox'][0][1] == 0.25
  experiment.build_experiment(_config('training.algorithm=fed_yogi', 'fed_opt.beta_2=0.5',
                                      'fed_opt.tau=0.01', 'fed_opt.server_learning_rate=0.03'))
  assert seen['build_fed_opt'][0][1] == 'yogi'
  assert seen['build_fed_opt'][0][3:7] == (0.03, 0.9, 0.5, 0.01)
  experiment.build_experiment(_config('training.algorithm=scaffold',
                                      'client_optimizer.learning_rate=0.07'))
  args, kwargs = seen['build_scaffold']
  assert args[1:3] == (0.07, 12)  # client learning rate, num_total_clients = the population


def test_dp_divisor_is_the_expected_cohort_of_the_poisson_sampler(monkeypatch):
  calls = []
  real = processes.dp_aggregator
  monkeypatch.setattr(processes, 'dp_aggregator',
                      lambda *args, **kwargs: calls.append(args) or real(*args, **kwargs))
  exp = experiment.build_experiment(_config(
      'training.algorithm=fed_avg_unweighted', 'aggregator.kind=dp',
      'aggregator.noise_multiplier=0.2', 'training.sampling=poisson', 'aggregator.zeroing=false'))
  assert calls == [(0.2, 3, False)]  # TFF's divisor: the expected cohort, clients_per_round
  assert exp.sampler.expected_cohort_size == pytest.approx(3.0)  # q N = clients_per_round
  assert exp.sampler.sampling_probability == pytest.approx(3 / 12)
  assert exp.privacy_accountant.sampling.clients_per_round == pytest.approx(3.0)
  assert exp.privacy_accountant.noise_multiplier == 0.2


def test_target_epsilon_is_calibrated_for_the_run():
  config = _config('training.algorithm=fed_avg_unweighted', 'aggregator.kind=dp',
                   'aggregator.target_epsilon=60', 'training.sampling=poisson',
                   'training.num_rounds=5')
  exp = experiment.build_experiment(config)
  accountant = exp.privacy_accountant
  assert accountant.epsilon(5) <= 60.0
  lower = type(accountant)(accountant.noise_multiplier - processes.CALIBRATION_TOLERANCE,
                           accountant.sampling, accountant.delta)
  assert lower.epsilon(5) > 60.0
  # The calibrated noise depends on the rounds: a resume may not change them.
  assert 'training.num_rounds' in experiment.run_info(config)
  assert 'training.num_rounds' not in experiment.run_info(_config())


@pytest.mark.parametrize('overrides,expected', [
    (['aggregator.kind=dp', 'aggregator.noise_multiplier=0.2'],
     "unweighted.*'fed_avg' weights clients.*fed_avg_unweighted"),
    (['training.algorithm=fed_avg_unweighted', 'aggregator.kind=dp'], 'exactly one of'),
    (['training.algorithm=fed_avg_unweighted', 'aggregator.kind=dp',
      'aggregator.noise_multiplier=1', 'aggregator.target_epsilon=2'], 'exactly one of'),
    (['aggregator.noise_multiplier=1'], "apply to aggregator.kind = 'dp'"),
    (['training.algorithm=fed_prox'], 'fed_prox.proximal_strength.*mu >= 0'),
    (['fed_opt.tau=0'], 'tau > 0'),
    (['training.algorithm=fed_avg_unweighted', 'aggregator.kind=dp',
      'aggregator.noise_multiplier=-1'], 'noise_multiplier: expected a value >= 0'),
])
def test_bad_algorithm_and_aggregator_sections_fail_at_load(overrides, expected):
  with pytest.raises(ConfigError, match=expected):
    _config(*overrides)


@pytest.mark.parametrize('overrides,expected', [
    (['training.algorithm=scaffold', 'client_optimizer.name=adam'], 'plain SGD'),
    (['training.algorithm=fed_avg_unweighted', 'aggregator.kind=dp',
      'aggregator.noise_multiplier=0.2', 'training.sampling=weighted'],
     'WeightedSampler.*poisson'),
    (['training.algorithm=fed_avg_unweighted', 'aggregator.kind=dp',
      'aggregator.noise_multiplier=0.2', 'aggregator.accountant=pld'],
     "PLD.*without replacement.*method='rdp'"),
    (['training.algorithm=fed_avg_unweighted', 'aggregator.kind=dp',
      'aggregator.noise_multiplier=1.0'], 'clipped_count_stddev.*too low'),
])
def test_bad_combinations_fail_before_training(overrides, expected):
  with pytest.raises(ConfigError, match=expected):
    experiment.build_experiment(_config(*overrides))
