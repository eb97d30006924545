"""An experiment built from a config: data, model, learning process, sampler, evaluation, outputs.

:func:`build_experiment` turns an :class:`~fedjax_like.simulation.config.ExperimentConfig` into the
pieces :func:`~fedjax_like.simulation.loop.run_training_process` takes, loading the dataset's task
first (:mod:`~fedjax_like.simulation.datasets`: data, model with its metrics, preprocessing) so that
a dataset that cannot be loaded fails before any training, with the file named.
:func:`run_experiment` runs it in its run directory:

    <output.root>/<run name>/
      config.json      the resolved config of the run (as first run: a resume never rewrites it)
      metrics.csv      one row per round
      tensorboard/     TensorBoard event files
      curves.png       train and eval accuracy and loss by round
      checkpoints/     orbax checkpoints, one directory per saved round
      summary.json     final metrics and where everything is
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

from fedjax_like.core import cohort
from fedjax_like.data.client_data import ClientData
from fedjax_like.data.dataset import BatchedDataset, Dataset
from fedjax_like.data.sampling import FixedSampler, PoissonSampler, UniformSampler, WeightedSampler
from fedjax_like.learning import optimizers
from fedjax_like.learning.process import LearningProcess
from fedjax_like.models.model import Model
from fedjax_like.simulation import config as config_lib
from fedjax_like.simulation.config import ConfigError, ExperimentConfig, OptimizerConfig
from fedjax_like.simulation.datasets import DriverTask, load_task
from fedjax_like.simulation.evaluation import FederatedEvaluation, sample_test_clients
from fedjax_like.simulation.loop import ResumeError, TrainingResult, run_training_process
from fedjax_like.simulation.processes import (
    build_accountant,
    build_aggregator,
    build_process,
    dp_noise_multiplier,
)
from fedjax_like.simulation.writers import CsvWriter, CurvePlot, TensorBoardWriter

# Options that may change between the interrupted and the resumed invocation of one run (the
# execution strategy may change results by float reassociation only, e.g. resuming on a GPU).
_RESUMABLE_CHANGES = (
    'training.num_rounds', 'training.execution', 'training.chunk_size', 'training.cpu_devices',
    'training.conv_lowering', 'data.cache_dir',
    'data.download', 'evaluation.', 'output.', 'name', 'description',
)  # fmt: skip


@dataclasses.dataclass
class Experiment:
  """The pieces of a run (see :func:`run_training_process` for how they are used)."""

  config: ExperimentConfig
  train_data: ClientData
  test_data: ClientData
  num_classes: int  # The model's number of outputs.
  model: Model
  process: LearningProcess
  sampler: Any
  client_preprocess: Callable[[Dataset, int], BatchedDataset]
  eval_preprocess: Callable[[Dataset], Dataset]
  privacy_accountant: Any = None  # a PrivacyAccountant when aggregator.kind = 'dp'


def load_datasets(config: ExperimentConfig) -> DriverTask:
  """The config's task (data, model, preprocessing); a dataset that cannot be loaded raises
  ConfigError naming ``data.dataset`` and the file and what was expected there."""
  return load_task(config.data, config.model, config.training, seed=config.seed)


def build_optimizer(opt: OptimizerConfig):
  """The optax transformation an :class:`OptimizerConfig` names."""
  eps = {} if opt.epsilon is None else {'epsilon': opt.epsilon}
  if opt.name == 'sgd':
    return optimizers.build_sgdm(opt.learning_rate, momentum=opt.momentum or None)
  if opt.name == 'adam':
    return optimizers.build_adam(opt.learning_rate, opt.beta_1, opt.beta_2, **eps)
  if opt.name == 'yogi':
    return optimizers.build_yogi(opt.learning_rate, opt.beta_1, opt.beta_2, **eps)
  if opt.name == 'adagrad':
    return optimizers.build_adagrad(opt.learning_rate, **eps)
  return optimizers.build_rmsprop(opt.learning_rate, **eps)


def _nonempty_ids(data: ClientData) -> dict[str, int]:
  return {c: n for c, n in data.client_sizes().items() if n > 0}


def build_experiment(config: ExperimentConfig) -> Experiment:
  """Loads the data and builds the model, process, sampler and client preprocessing."""
  task = load_datasets(config)
  train, test, model = task.train_data, task.test_data, task.model
  training = config.training
  sizes = _nonempty_ids(train)
  if training.clients_per_round > len(sizes):
    raise ConfigError(
        f'training.clients_per_round = {training.clients_per_round}: expected at most the number '
        f'of training clients with data ({len(sizes)}).'
    )
  if training.sampling == 'uniform':
    sampler = UniformSampler(list(sizes), training.clients_per_round, seed=config.seed)
  elif training.sampling == 'weighted':
    sampler = WeightedSampler(sizes, training.clients_per_round, seed=config.seed)
  elif training.sampling == 'poisson':
    sampler = PoissonSampler.with_expected_size(
        list(sizes), training.clients_per_round, seed=config.seed
    )
  else:
    sampler = FixedSampler(list(sizes)[: training.clients_per_round])
  accountant, noise_multiplier = None, None
  if config.aggregator.kind == 'dp':
    noise_multiplier = dp_noise_multiplier(config, sampler)
    accountant = build_accountant(config, sampler, noise_multiplier)
  process = build_process(
      config, model, len(sizes), build_optimizer, build_aggregator(config, noise_multiplier)
  )
  return Experiment(config, train, test, model.num_outputs, model, process, sampler,
                    task.train_preprocess, task.eval_preprocess, accountant)


def run_info(config: ExperimentConfig) -> dict[str, Any]:
  """The config's options that define the run (a resume must match them), flattened."""
  flat = {}
  # A noise multiplier calibrated for a target epsilon depends on the number of rounds.
  calibrated = config.aggregator.kind == 'dp' and config.aggregator.target_epsilon is not None
  for key in config_lib.flat_fields():
    resumable = any(key == p or (p.endswith('.') and key.startswith(p)) for p in _RESUMABLE_CHANGES)
    if not resumable or (calibrated and key == 'training.num_rounds'):
      flat[key] = config_lib.get_value(config, key)
  return flat


@dataclasses.dataclass
class RunOutputs:
  """Where a run's outputs are (paths that were not written are None)."""

  run_dir: str
  config: str
  metrics_csv: str | None
  tensorboard: str | None
  plot: str | None
  checkpoints: str
  summary: str


def run_paths(config: ExperimentConfig) -> RunOutputs:
  out = config.output
  run_dir = os.path.abspath(os.path.join(out.root, out.run_name or config.name))
  return RunOutputs(
      run_dir=run_dir,
      config=os.path.join(run_dir, 'config.json'),
      metrics_csv=os.path.join(run_dir, 'metrics.csv') if out.csv else None,
      tensorboard=os.path.join(run_dir, 'tensorboard') if out.tensorboard else None,
      plot=os.path.join(run_dir, 'curves.png') if out.plot else None,
      checkpoints=os.path.join(run_dir, 'checkpoints'),
      summary=os.path.join(run_dir, 'summary.json'),
  )


def _resumes(paths: RunOutputs) -> bool:
  """Whether the run directory holds a run to resume (its config and a checkpoint)."""
  if not (os.path.isfile(paths.config) and os.path.isdir(paths.checkpoints)):
    return False
  return any(name.isdigit() for name in os.listdir(paths.checkpoints))


def _check_same_run(config: ExperimentConfig, paths: RunOutputs) -> None:
  """Refuses (before touching the directory) to resume a run made with a different config."""
  if not _resumes(paths):
    return
  try:
    with open(paths.config) as f:
      saved = run_info(config_lib.from_dict(json.load(f)))
  except (ValueError, ConfigError):
    return  # Unreadable: the checkpoint's own record is checked by the loop.
  now = run_info(config)
  differing = sorted(k for k in now if saved.get(k) != now[k])
  if differing:
    raise ResumeError(
        f'{paths.run_dir} holds checkpoints of a run with a different config: '
        + ', '.join(f'{k} was {saved.get(k)!r}, now {now[k]!r}' for k in differing)
        + '.'
    )


def run_experiment(config: ExperimentConfig) -> tuple[TrainingResult, RunOutputs, dict[str, Any]]:
  """Builds the experiment, trains it in its run directory (resuming it if it has checkpoints)
  and writes the outputs. Returns ``(result, paths, summary)``."""
  training = config.training
  use_cpu_devices(training.cpu_devices)
  # Everything the run traces (the process, its checks, evaluation) runs as configured.
  with cohort.execution(
      training.execution, chunk_size=training.chunk_size, conv_lowering=training.conv_lowering
  ):
    return _run_experiment(config)


def use_cpu_devices(count: int | None) -> None:
  """Makes JAX's CPU backend start with ``count`` devices (0: one per core; None: leave JAX's
  setting), so the engine shards a cohort over the cores. Raises ``ConfigError`` when JAX has
  already started in this process with another count."""
  if count is None:
    return
  if count < 0:
    raise ConfigError(f'training.cpu_devices must be >= 0 (0: one per core); got {count}.')
  import jax

  if not count:  # the cores this process may run on (a container's limit, not the host's)
    count = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  count = count or 1
  try:
    jax.config.update('jax_num_cpu_devices', count)
  except RuntimeError:  # the backends have started: fine if they already have that many
    have = len(jax.devices('cpu'))
    if have != count:
      raise ConfigError(
          f'training.cpu_devices={count} cannot take effect: JAX already started in this process '
          f'with {have} CPU device(s). Run the experiment in a fresh process (the CLI does), or '
          f'set JAX_NUM_CPU_DEVICES={count} before starting Python.'
      ) from None


def _check_output_root(config: ExperimentConfig, paths: RunOutputs) -> None:
  for key, path in (('output.root', config.output.root), ('the run directory', paths.run_dir)):
    if os.path.exists(path) and not os.path.isdir(path):
      raise ConfigError(
          f'{key} {path!r} is a file, not a directory: choose a directory for the outputs '
          '(--output.root DIR).'
      )


def _run_experiment(config: ExperimentConfig):
  paths = run_paths(config)
  _check_output_root(config, paths)
  experiment = build_experiment(config)  # Fails here, before any output, if the data is missing.
  if config.output.overwrite and os.path.isdir(paths.run_dir):
    shutil.rmtree(paths.run_dir)
  _check_same_run(config, paths)
  if not _resumes(paths):  # A resume keeps the run's original config.json.
    try:
      os.makedirs(paths.run_dir, exist_ok=True)
      with open(paths.config, 'w') as f:
        f.write(config_lib.dumps(config))
    except OSError as e:
      raise ConfigError(
          f'output.root: cannot write the run directory {paths.run_dir}: {e.strerror or e}.'
      ) from e

  evaluation, eval_every = None, config.evaluation.every
  if eval_every > 0:
    test_ids = sample_test_clients(experiment.test_data, config.evaluation.num_clients, config.seed)
    evaluation = FederatedEvaluation(
        experiment.model, experiment.test_data, config.evaluation.batch_size, test_ids,
        preprocess=experiment.eval_preprocess,
    )
  writers = []
  if paths.metrics_csv:
    writers.append(CsvWriter(paths.metrics_csv))
  if paths.tensorboard:
    writers.append(TensorBoardWriter(paths.tensorboard))
  if paths.plot:
    writers.append(CurvePlot(paths.plot, title=f'{config.name}'))

  started = time.perf_counter()
  result = run_training_process(
      experiment.process,
      experiment.train_data,
      experiment.sampler,
      config.training.num_rounds,
      client_preprocess=experiment.client_preprocess,
      evaluation=evaluation,
      eval_every=eval_every,
      checkpoint_dir=paths.checkpoints,
      checkpoint_every=config.output.checkpoint_every,
      keep_checkpoints=config.output.keep_checkpoints,
      metrics_writers=writers,
      progress=config.output.progress,
      run_info=run_info(config),
      privacy_accountant=experiment.privacy_accountant,
  )
  summary = _summary(config, result, paths, time.perf_counter() - started)
  if experiment.privacy_accountant is not None:
    accountant = experiment.privacy_accountant
    summary['privacy'] = dict(accountant.state(), rounds=result.last_round,
                              epsilon=accountant.epsilon(result.last_round))
  with open(paths.summary, 'w') as f:
    json.dump(summary, f, indent=2)
    f.write('\n')
  return result, paths, summary


def _last(history, suffix: str) -> tuple[int | None, float | None]:
  for record in reversed(history):
    for name, value in record.items():
      if name.endswith(suffix):
        return int(record['round']), value
  return None, None


def _summary(config, result: TrainingResult, paths: RunOutputs, seconds: float) -> dict[str, Any]:
  train_round, train_accuracy = _last(result.history, 'train/accuracy')
  eval_round, eval_accuracy = _last(result.history, 'eval/accuracy')
  rounds_run = max(result.last_round - result.start_round, 0)
  return {
      'name': config.name,
      'rounds': result.last_round,
      'resumed_from_round': result.start_round,
      'rounds_this_run': rounds_run,
      'seconds_this_run': round(seconds, 3),
      'train_accuracy': train_accuracy,
      'train_accuracy_round': train_round,
      'eval_accuracy': eval_accuracy,
      'eval_accuracy_round': eval_round,
      'checkpoint_rounds': result.checkpoint_rounds,
      'paths': dataclasses.asdict(paths),
  }
