"""Reading a finished (or interrupted) run of ``fedjax-like train`` back: config, process, state.

A run directory (:mod:`.experiment`) holds ``config.json`` and orbax checkpoints under
``checkpoints/<round>/``. :func:`load_run` rebuilds the run's learning process from its config and
restores the latest checkpoint into it, so the trained model is one call away::

    run = fl.simulation.load_run('runs/digits_fedavg')
    weights = run.process.get_model_weights(run.state)         # ModelWeights
    variables = fl.models.export_flax_variables(weights)       # {'params': ...} for module.apply
    metrics = fl.simulation.FederatedEvaluation(run.model, test_data)(weights)

Building the process loads the run's dataset (to know its classes), as the run itself did.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

from fedjax_like.learning.process import LearningAlgorithmState, LearningProcess
from fedjax_like.models.model import Model
from fedjax_like.simulation import config as config_lib
from fedjax_like.simulation.checkpoint import Checkpointer
from fedjax_like.simulation.config import ConfigError, ExperimentConfig


class LoadedRun(NamedTuple):
  """A run read back by :func:`load_run`.

  Attributes:
    config: the run's config (its ``config.json``).
    process: the learning process the run trained, rebuilt from the config.
    state: the server state of the latest checkpoint (the final state of a finished run).
    round_num: the round ``state`` is after.
    model: the run's model (``process.model``).
    history: the metrics records of rounds ``1..round_num`` (as in ``metrics.csv``).
  """

  config: ExperimentConfig
  process: LearningProcess
  state: LearningAlgorithmState
  round_num: int
  model: Model
  history: list[dict[str, Any]]


def load_run(run_dir: str | os.PathLike[str], round_num: int | None = None) -> LoadedRun:
  """The config, learning process and server state of a ``fedjax-like train`` run.

  Args:
    run_dir: the run directory (``<output.root>/<run name>``, printed at the end of a run).
    round_num: the checkpoint to restore (default: the latest).

  Raises:
    FileNotFoundError: ``run_dir`` has no ``config.json`` or no committed checkpoint (of that
      round); the message lists what it holds.
    ConfigError: the saved config no longer loads (e.g. written by another version).
  """
  from fedjax_like.simulation.experiment import build_experiment  # Imports the data sources.

  run_dir = os.path.abspath(os.fspath(run_dir))
  config_path = os.path.join(run_dir, 'config.json')
  if not os.path.isfile(config_path):
    held = sorted(os.listdir(run_dir)) if os.path.isdir(run_dir) else None
    raise FileNotFoundError(
        f'{run_dir} is not a run directory: it has no config.json '
        + (f'(it holds {held}).' if held is not None else '(it does not exist).')
        + ' Pass <output.root>/<run name>, e.g. runs/digits_fedavg.'
    )
  try:
    with open(config_path) as f:
      config = config_lib.from_dict(json.load(f), where=f' in {config_path}')
  except json.JSONDecodeError as e:
    raise ConfigError(f'{config_path} is not valid JSON: {e}.') from None
  checkpoints = os.path.join(run_dir, 'checkpoints')
  missing = FileNotFoundError(
      f'{run_dir} has no committed checkpoint in {checkpoints}: the run stopped before its first '
      'checkpoint (output.checkpoint_every).'
  )
  if not os.path.isdir(checkpoints):
    raise missing
  experiment = build_experiment(config)
  checkpointer = Checkpointer(checkpoints)
  try:
    if checkpointer.latest_round() is None:
      raise missing
    state, meta = checkpointer.restore(experiment.process.initialize(), round_num)
  finally:
    checkpointer.close()
  history = [dict(r) for r in meta.get('history', [])]
  return LoadedRun(
      config, experiment.process, state, int(meta['round']), experiment.model, history
  )
