"""The experiment configuration: a typed schema of dataclasses, loaded from TOML or JSON.

Every option of ``fedjax-like train`` is a field below, addressed by a dotted key
(``training.num_rounds``); its type annotation is what a value must be and its ``help`` is what
``--help`` prints. The defaults are the offline digits experiment of ``configs/digits.toml``
(the configs ship inside the package, in ``fedjax_like/configs/``; ``--config digits`` names one).

A config is built in three layers: the defaults here, then a file (``--config``), then command-line
overrides (``--training.num_rounds 5`` or ``--set training.num_rounds=5``).

Validation happens before any data is loaded or any round runs, and every error names the key (and
the file) and what was expected: an unknown key (with the closest known one), a value of the wrong
type, or a value out of range raise :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal

from fedjax_like.simulation.config_algorithms import (
    AggregatorConfig,
    FedOptConfig,
    FedProxConfig,
    check_algorithm_sections,
)
from fedjax_like.simulation.config_data import DataConfig, ModelConfig, check_data_sections
from fedjax_like.simulation.config_files import (
    ConfigError,
    packaged_configs,
    read_config_file,
    resolve_config_path,
)

__all__ = [
    'AggregatorConfig',
    'ConfigError',
    'DataConfig',
    'EvaluationConfig',
    'ExperimentConfig',
    'FedOptConfig',
    'FedProxConfig',
    'ModelConfig',
    'OptimizerConfig',
    'OutputConfig',
    'TrainingConfig',
    'flat_fields',
    'get_value',
    'load_config',
    'packaged_configs',
    'to_dict',
]


def _field(default: Any, help_text: str) -> Any:
  """A schema field with its ``--help`` text (a section's class as default makes a fresh one)."""
  if isinstance(default, type) and dataclasses.is_dataclass(default):
    return dataclasses.field(default_factory=default, metadata={'help': help_text})
  return dataclasses.field(default=default, metadata={'help': help_text})


@dataclasses.dataclass
class OptimizerConfig:
  name: Literal['sgd', 'adam', 'yogi', 'adagrad', 'rmsprop'] = _field('sgd', 'The optimizer.')
  learning_rate: float = _field(0.1, 'Learning rate.')
  momentum: float = _field(0.0, 'sgd: heavy-ball momentum (0: plain SGD).')
  beta_1: float = _field(0.9, 'adam, yogi: first-moment decay.')
  beta_2: float = _field(0.999, 'adam, yogi: second-moment decay.')
  epsilon: float | None = _field(None, "adam, yogi, adagrad, rmsprop: epsilon (default: TFF's).")


def _client_optimizer() -> OptimizerConfig:
  return OptimizerConfig(learning_rate=0.01)


def _server_optimizer() -> OptimizerConfig:
  return OptimizerConfig(learning_rate=1.0)


@dataclasses.dataclass
class TrainingConfig:
  algorithm: Literal[
      'fed_avg', 'fed_avg_unweighted', 'fed_prox', 'fed_prox_unweighted', 'fed_adam', 'fed_yogi',
      'fed_adagrad', 'fed_sgd', 'scaffold', 'mime_lite', 'mime_lite_unweighted',
  ] = _field(
      'fed_avg',
      "'fed_avg': updates weighted by examples; '_unweighted': equal weights (what a DP "
      "aggregator needs); 'fed_prox' (see [fed_prox]); 'fed_adam'/'fed_yogi'/'fed_adagrad' "
      "(Reddi et al.'s server optimizers, see [fed_opt]; [server_optimizer] unused); 'fed_sgd' "
      "(TFF's default server optimizer is sgd at 0.1); 'scaffold' (client SGD at "
      "client_optimizer.learning_rate, equal weights); 'mime_lite' (client_optimizer is its base "
      'optimizer).',
  )
  num_rounds: int = _field(200, 'Rounds to train (a resumed run continues up to this round).')
  clients_per_round: int = _field(
      20, 'Cohort size: clients sampled each round (the expected size under poisson sampling).'
  )
  client_epochs: int = _field(5, "Passes over each client's data per round.")
  batch_size: int = _field(20, 'Client batch size.')
  max_client_examples: int | None = _field(
      None, "Cap on a client's examples per round, counted after the repeat over client_epochs "
      "(TFF's max_elements; the shuffle makes them a seeded random subset); none: all."
  )
  sampling: Literal['uniform', 'weighted', 'fixed', 'poisson'] = _field(
      'uniform',
      "'uniform': distinct clients, equally likely; 'weighted': by number of examples; "
      "'fixed': the first clients_per_round clients every round; 'poisson': each client with "
      'probability clients_per_round / clients (the sampling DP-FedAvg is analysed for).',
  )
  execution: Literal['auto', 'vmap', 'sequential', 'chunked', 'lanes'] = _field(
      'auto', 'How the engine runs clients (see fedjax_like.core.engine).'
  )
  chunk_size: int | None = _field(None, "Clients per chunk for execution='chunked'.")
  cpu_devices: int | None = _field(
      None, 'CPU devices JAX makes, so the engine runs shares of the cohort on several cores at '
      "once (0: one per core); none: JAX's own (one, or JAX_NUM_CPU_DEVICES). Read when JAX "
      'starts.'
  )
  conv_lowering: Literal['auto', 'native', 'im2col', 'xla'] = _field(
      'auto',
      "How convolutions run: 'native' kernels (the CPU default), 'im2col', or XLA's own "
      '(the accelerator default); see fedjax_like.core.engine.lowering.',
  )


@dataclasses.dataclass
class EvaluationConfig:
  every: int = _field(
      10, 'Evaluate on test clients every this many rounds (and at the last); 0: never.'
  )
  num_clients: int | None = _field(
      None, 'Test clients to evaluate on (a fixed seeded subset); none: all of them.'
  )
  batch_size: int = _field(100, 'Evaluation batch size.')


@dataclasses.dataclass
class OutputConfig:
  root: str = _field('runs', 'Directory that holds the run directories.')
  run_name: str | None = _field(
      None, 'Run directory name under root (default: the experiment name).'
  )
  overwrite: bool = _field(False, 'Delete an existing run directory first instead of resuming it.')
  checkpoint_every: int = _field(
      50, 'Save a checkpoint every this many rounds (and at the last); 0: only at the last.'
  )
  keep_checkpoints: int = _field(3, 'Checkpoints kept on disk (the newest ones).')
  csv: bool = _field(True, 'Write metrics.csv.')
  tensorboard: bool = _field(True, 'Write TensorBoard event files under tensorboard/.')
  plot: bool = _field(True, 'Save the train and eval curves as curves.png at the end.')
  progress: Literal['auto', 'bar', 'log', 'none'] = _field(
      'auto',
      "'bar': a progress bar; 'log': a line per evaluation; 'auto': bar on a terminal, else none.",
  )


@dataclasses.dataclass
class ExperimentConfig:
  name: str = _field('digits_fedavg', 'Experiment name (also the default run directory name).')
  description: str = _field('', 'Free text, e.g. the published result this config reproduces.')
  seed: int = _field(0, 'Seeds the initial model, client sampling, shuffling and dropout.')
  data: DataConfig = _field(DataConfig, 'Dataset.')
  model: ModelConfig = _field(ModelConfig, 'Model.')
  client_optimizer: OptimizerConfig = dataclasses.field(
      default_factory=_client_optimizer, metadata={'help': 'Client optimizer.'}
  )
  server_optimizer: OptimizerConfig = dataclasses.field(
      default_factory=_server_optimizer, metadata={'help': 'Server optimizer.'}
  )
  training: TrainingConfig = _field(TrainingConfig, 'Training.')
  evaluation: EvaluationConfig = _field(EvaluationConfig, 'Evaluation.')
  output: OutputConfig = _field(OutputConfig, 'Outputs.')
  aggregator: AggregatorConfig = _field(AggregatorConfig, 'Model update aggregator.')
  fed_prox: FedProxConfig = _field(FedProxConfig, 'FedProx options.')
  fed_opt: FedOptConfig = _field(FedOptConfig, 'FedAdam, FedYogi, FedAdagrad options.')


# Reflection over the schema -----------------------------------------------------------------------


def _hints(cls) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def _is_section(tp) -> bool:
  return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def flat_fields(
    cls=ExperimentConfig, prefix: str = '', defaults=None
) -> dict[str, tuple[Any, Any, str]]:
  """``{dotted_key: (type, default, help)}`` for every leaf option of the schema.

  Defaults are read from the default instance of the whole config, so a section whose defaults
  differ by place (the client and server optimizers' learning rates) reports its own.
  """
  out = {}
  defaults = cls() if defaults is None else defaults
  hints = _hints(cls)
  for f in dataclasses.fields(cls):
    key = prefix + f.name
    if _is_section(hints[f.name]):
      out.update(flat_fields(hints[f.name], key + '.', getattr(defaults, f.name)))
    else:
      out[key] = (hints[f.name], getattr(defaults, f.name), f.metadata.get('help', ''))
  return out


def describe_type(tp) -> str:
  """A type as a reader would say it: ``an integer``, ``one of 'a', 'b'``, ``... or none``."""
  args = typing.get_args(tp)
  if typing.get_origin(tp) is Literal:
    return 'one of ' + ', '.join(repr(a) for a in args)
  if typing.get_origin(tp) in (typing.Union, types.UnionType):
    inner = [a for a in args if a is not type(None)]
    return ' or '.join(describe_type(a) for a in inner) + ' or none'
  return {bool: 'a boolean', int: 'an integer', float: 'a number', str: 'a string'}.get(tp, str(tp))


_TRUE, _FALSE = ('true', 'yes', 'on', '1'), ('false', 'no', 'off', '0')
_NONE = ('none', 'null')


def _coerce(value: Any, tp, key: str, where: str, from_text: bool) -> Any:
  """``value`` as type ``tp`` (parsing it when it came from the command line), or ConfigError."""

  def fail():
    raise ConfigError(
        f'{key}{where}: expected {describe_type(tp)}, got {value!r} ({type(value).__name__}).'
    )

  origin, args = typing.get_origin(tp), typing.get_args(tp)
  if origin in (typing.Union, types.UnionType):
    if value is None or (from_text and str(value).strip().lower() in _NONE):
      return None
    inner = [a for a in args if a is not type(None)]
    return _coerce(value, inner[0], key, where, from_text)
  if origin is Literal:
    if value in args:
      return value
    return fail()
  if tp is bool:
    if isinstance(value, bool):
      return value
    if from_text and str(value).strip().lower() in _TRUE + _FALSE:
      return str(value).strip().lower() in _TRUE
    return fail()
  if tp is int:
    if isinstance(value, int) and not isinstance(value, bool):
      return value
    if from_text:
      try:
        return int(str(value).strip().replace('_', ''))
      except ValueError:
        pass
    return fail()
  if tp is float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
    if from_text:
      try:
        return float(str(value).strip())
      except ValueError:
        pass
    return fail()
  if tp is str:
    return value if isinstance(value, str) else fail()
  raise TypeError(f'Unsupported config type {tp!r} for {key}.')  # pragma: no cover - schema bug


def _unknown_key(key: str, known: Sequence[str], where: str) -> ConfigError:
  close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
  hint = f" Did you mean '{close[0]}'?" if close else ''
  section = key.rsplit('.', 1)[0] + '.' if '.' in key else ''
  siblings = sorted(k for k in known if k.startswith(section) and '.' not in k[len(section) :])
  return ConfigError(
      f"Unknown config key '{key}'{where}.{hint} Known keys here: {', '.join(siblings)}."
  )


def _build(cls, values: dict[str, Any], prefix: str, where: str, base):
  """``base`` (an instance of ``cls``) updated from a nested dict; unknown keys and wrong types
  raise ConfigError. Sections not given keep ``base``'s values (so the server optimizer's default
  learning rate of 1.0 survives a file that only names it)."""
  hints = _hints(cls)
  names = {f.name for f in dataclasses.fields(cls)}
  known = list(flat_fields(ExperimentConfig))
  kwargs = {f.name: getattr(base, f.name) for f in dataclasses.fields(cls)}
  for name, value in values.items():
    key = prefix + str(name)
    if name not in names:
      raise _unknown_key(key, known + [k.rsplit('.', 1)[0] for k in known if '.' in k], where)
    tp = hints[name]
    if _is_section(tp):
      if not isinstance(value, dict):
        raise ConfigError(f'{key}{where}: expected a table (section) of options, got {value!r}.')
      kwargs[name] = _build(tp, value, key + '.', where, getattr(base, name))
    else:
      if isinstance(value, dict):
        raise ConfigError(f'{key}{where}: expected {describe_type(tp)}, got a table {value!r}.')
      kwargs[name] = _coerce(value, tp, key, where, from_text=False)
  return cls(**kwargs)


def from_dict(values: dict[str, Any], where: str = '') -> ExperimentConfig:
  """An :class:`ExperimentConfig` from nested dicts (``where`` names the source in errors)."""
  if not isinstance(values, dict):
    raise ConfigError(f'The config{where} must be a table of options; got {type(values).__name__}.')
  return _build(ExperimentConfig, values, '', where, ExperimentConfig())


def to_dict(config) -> dict[str, Any]:
  """The config as nested dicts of JSON values (round-trips through :func:`from_dict`)."""
  return dataclasses.asdict(config)


def apply_override(
    config: ExperimentConfig, key: str, text: Any, where: str = ''
) -> ExperimentConfig:
  """A copy of ``config`` with the dotted ``key`` set to ``text`` parsed as the key's type."""
  fields = flat_fields()
  if key not in fields:
    raise _unknown_key(key, list(fields), where)
  value = _coerce(text, fields[key][0], key, where, from_text=isinstance(text, str))
  values = to_dict(config)
  node = values
  *sections, leaf = key.split('.')
  for section in sections:
    node = node[section]
  node[leaf] = value
  return from_dict(values)


def parse_set(assignment: str) -> tuple[str, str]:
  """``'training.num_rounds=5' -> ('training.num_rounds', '5')``."""
  key, sep, value = assignment.partition('=')
  if not sep or not key.strip():
    raise ConfigError(f"--set expects key=value (e.g. training.num_rounds=5); got '{assignment}'.")
  return key.strip(), value.strip()


def _check_range(config: ExperimentConfig) -> None:
  positive = [
      'training.num_rounds', 'training.clients_per_round', 'training.client_epochs',
      'training.batch_size', 'training.max_client_examples', 'training.chunk_size',
      'evaluation.batch_size', 'evaluation.num_clients', 'output.keep_checkpoints',
  ]  # fmt: skip
  non_negative = [
      'seed', 'evaluation.every', 'output.checkpoint_every',
      'client_optimizer.learning_rate', 'server_optimizer.learning_rate',
      'client_optimizer.momentum', 'server_optimizer.momentum',
  ]  # fmt: skip
  values = {k: get_value(config, k) for k in positive + non_negative}
  for key in positive:
    if values[key] is not None and values[key] < 1:
      raise ConfigError(f'{key}: expected a positive integer, got {values[key]!r}.')
  for key in non_negative:
    if values[key] < 0:
      raise ConfigError(f'{key}: expected a value >= 0, got {values[key]!r}.')
  for key in ('client_optimizer.momentum', 'server_optimizer.momentum'):
    if values[key] >= 1:
      raise ConfigError(f'{key}: expected a value in [0, 1), got {values[key]!r}.')
  if not config.name or '/' in config.name:
    raise ConfigError(f'name: expected a non-empty name without "/", got {config.name!r}.')
  check_data_sections(config)
  check_algorithm_sections(config)


def get_value(config, key: str) -> Any:
  """The value of the dotted ``key`` in ``config``."""
  node = config
  for part in key.split('.'):
    node = getattr(node, part)
  return node


def load_config(
    path: str | None = None, overrides: Sequence[tuple[str, str]] = ()
) -> ExperimentConfig:
  """Defaults, then the file at ``path`` (TOML or JSON), then ``(key, value_text)`` overrides.

  ``path`` is a file, or the name of a config shipped with the package (:func:`packaged_configs`:
  ``'digits'``, ``'digits_cnn'``, ``'emnist62_fedavg'``).

  Raises:
    ConfigError: the file is missing or malformed, or a key is unknown, of the wrong type or out of
      range; the message names the key (and the file) and what was expected.
  """
  if path is None:
    config = ExperimentConfig()
  else:
    path = resolve_config_path(path)
    config = from_dict(read_config_file(path), where=f' in {path}')
  for key, text in overrides:
    config = apply_override(config, key, text, where=' (command line)')
  _check_range(config)
  return config


def dumps(config: ExperimentConfig) -> str:
  """The config as indented JSON (what a run directory's config.json holds)."""
  return json.dumps(to_dict(config), indent=2, sort_keys=False) + '\n'
