"""The command line: ``fedjax-like train --config FILE`` (also ``python -m fedjax_like train``).

Every config option is also a flag, ``--<section>.<option> VALUE`` (``--training.num_rounds 5``),
and ``--set key=value`` sets any of them too; flags and ``--set`` apply after the file, in order.
The run directory is ``<output.root>/<output.run_name or name>``; running the same command again
resumes it from its latest checkpoint (``--output.overwrite true`` starts afresh). Errors in the
config or the data are reported before training starts, naming the key or file, with exit status 2.

Failures during a run are reported the same way, as one paragraph with exit status 2 (no
traceback): a client whose data turns out to be damaged when it is first sampled (the last
completed round is checkpointed first), a checkpoint or output that cannot be written (a full
disk), an output root that is not a directory, a missing optional dependency (checked before
anything runs).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import typing
from collections.abc import Sequence
from typing import Any

from fedjax_like.simulation import config as config_lib
from fedjax_like.simulation.config import ConfigError

_EPILOG = """\
examples:
  fedjax-like train                                     # the offline digits default
  fedjax-like train --config emnist62_fedavg              # a config shipped with the package
  fedjax-like train --config digits --training.num_rounds 20 --set seed=1
  fedjax-like train --config my_experiment.toml --print-config

outputs (in <output.root>/<run name>/): config.json, metrics.csv, tensorboard/, curves.png,
checkpoints/<round>/, summary.json. Re-running a command resumes its run from the last checkpoint.
"""


def _metavar(tp) -> str:
  origin, args = typing.get_origin(tp), typing.get_args(tp)
  if origin is typing.Literal:
    return '{' + ','.join(str(a) for a in args) + '}'
  if args:
    inner = [a for a in args if a is not type(None)]
    return _metavar(inner[0]) + '|none'
  return {bool: 'BOOL', int: 'INT', float: 'FLOAT', str: 'TEXT'}.get(tp, 'VALUE')


class _Override(argparse.Action):
  """Collects ``--key value`` and ``--set key=value`` in command-line order."""

  def __call__(self, parser, namespace, values, option_string=None):
    overrides = list(getattr(namespace, 'overrides', None) or [])
    if self.dest == 'set':
      try:
        overrides.append(config_lib.parse_set(values))
      except ConfigError as e:
        parser.error(str(e))
    else:
      overrides.append((self.dest, values))
    namespace.overrides = overrides


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='fedjax-like',
      description='Federated learning experiments with fedjax_like.',
      allow_abbrev=False,
  )
  commands = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
  train = commands.add_parser(
      'train',
      help='Train a federated model from a config (resumes its run if it has checkpoints).',
      description='Train a federated model from a config file, with any option overridden.',
      usage='fedjax-like train [--config FILE] [--set KEY=VALUE] [--SECTION.OPTION VALUE] ...',
      epilog=_EPILOG,
      formatter_class=argparse.RawDescriptionHelpFormatter,
      allow_abbrev=False,  # --training.num would silently mean --training.num_rounds
  )
  train.add_argument(
      '--config',
      metavar='FILE',
      help='A TOML or JSON config file, or the name of a config shipped with the package ('
      + ', '.join(config_lib.packaged_configs())
      + '); options not in it keep their defaults.',
  )
  train.add_argument(
      '--set',
      metavar='KEY=VALUE',
      action=_Override,
      default=argparse.SUPPRESS,
      help='Set any option, e.g. --set training.num_rounds=5 (repeatable).',
  )
  train.add_argument(
      '--print-config',
      action='store_true',
      help='Print the resolved config as JSON and exit without training.',
  )
  groups: dict[str, Any] = {}
  for key, (tp, default, help_text) in config_lib.flat_fields().items():
    section = key.split('.')[0] if '.' in key else 'experiment'
    if section not in groups:
      groups[section] = train.add_argument_group(f'{section} options')
    groups[section].add_argument(
        f'--{key}',
        dest=key,
        metavar=_metavar(tp),
        action=_Override,
        default=argparse.SUPPRESS,
        help=f'{help_text} (default: {default!r})'.replace('%', '%%'),
    )
  train.set_defaults(overrides=[])
  return parser


def _print_summary(summary: dict[str, Any], stream) -> None:
  paths = summary['paths']

  def rel(path):
    if not path:
      return None
    inside = os.path.commonpath([os.path.abspath(path), os.getcwd()]) == os.getcwd()
    return os.path.relpath(path) if inside else path

  resumed = summary['resumed_from_round']
  lines = [
      f"Run '{summary['name']}': {summary['rounds']} rounds"
      + (f' (resumed after round {resumed})' if resumed else '')
      + f', {summary["rounds_this_run"]} trained in {summary["seconds_this_run"]:.1f} s.',
  ]
  if summary['train_accuracy'] is not None:
    accuracy, round_num = summary['train_accuracy'], summary['train_accuracy_round']
    lines.append(f'  train accuracy {accuracy:.4f} (round {round_num})')
  if summary['eval_accuracy'] is not None:
    lines.append(
        f'  eval accuracy  {summary["eval_accuracy"]:.4f} (round {summary["eval_accuracy_round"]}, '
        'test clients)'
    )
  privacy = summary.get('privacy')
  if privacy is not None:
    lines.append(
        f"  privacy        epsilon {privacy['epsilon']:.4g} at delta {privacy['delta']:g} after "
        f"{privacy['rounds']} rounds (noise multiplier {privacy['noise_multiplier']:.4g}, "
        f"{privacy['method'].upper()})"
    )
  rounds = summary['checkpoint_rounds']
  entries = [
      ('run directory', rel(paths['run_dir']), ''),
      ('metrics CSV', rel(paths['metrics_csv']), ''),
      ('curves plot', rel(paths['plot']), ''),
      (
          'TensorBoard',
          rel(paths['tensorboard']),
          f'  (tensorboard --logdir {rel(paths["tensorboard"])})',
      ),
      ('checkpoints', rel(paths['checkpoints']), f'  (rounds {rounds})' if rounds else ''),
      ('config', rel(paths['config']), ''),
      ('summary', rel(paths['summary']), ''),
  ]
  for label, path, note in entries:
    if path:
      lines.append(f'  {label:<14}{path}{note}')
  print('\n'.join(lines), file=stream, flush=True)


def _check_extras(config: config_lib.ExperimentConfig) -> None:
  """Refuses, before anything runs, a run whose outputs need a package that is not installed."""
  needed = [('orbax.checkpoint', 'orbax-checkpoint', 'checkpoints')]
  if config.output.tensorboard:
    needed.append(('tensorboardX', 'tensorboardX', 'TensorBoard logs (--output.tensorboard false)'))
  if config.output.plot:
    needed.append(('matplotlib', 'matplotlib', 'the curves plot (--output.plot false)'))
  if config.output.progress == 'bar':
    needed.append(('tqdm', 'tqdm', "the progress bar (--output.progress log)"))
  missing = []
  for module, package, what in needed:
    try:
      found = importlib.util.find_spec(module) is not None
    except ImportError:  # the parent package is missing
      found = False
    if not found:
      missing.append(f'{package} for {what}')
  if missing:
    raise ConfigError(
        f'The experiment driver needs {"; ".join(missing)}, not installed here. Install the '
        "driver's extra: pip install 'fedjax_like[sim]'."
    )


def train(args: argparse.Namespace, stdout=None) -> int:
  from fedjax_like.simulation.experiment import run_experiment
  from fedjax_like.simulation.loop import ResumeError

  stdout = stdout or sys.stdout
  config = config_lib.load_config(args.config, args.overrides)
  if args.print_config:
    stdout.write(config_lib.dumps(config))
    return 0
  _check_extras(config)
  try:
    _, _, summary = run_experiment(config)
  except ResumeError as e:
    raise ConfigError(
        f'{e} Resume it with the same options, choose another --output.run_name, or pass '
        '--output.overwrite true to discard it.'
    ) from e
  _print_summary(summary, stdout)
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """The ``fedjax-like`` console script; returns the exit status (2 for config or data errors)."""
  from fedjax_like.simulation.checkpoint import CheckpointWriteError
  from fedjax_like.simulation.cohorts import ClientDataError

  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    if args.command == 'train':
      return train(args)
  except ConfigError as e:
    print(f'fedjax-like: error: {e}', file=sys.stderr)
    return 2
  except (ClientDataError, CheckpointWriteError, OSError, ImportError) as e:
    print(f'fedjax-like: error: {" ".join(str(e).split())}', file=sys.stderr)
    return 2
  return 1  # pragma: no cover - argparse rejects unknown commands


if __name__ == '__main__':
  sys.exit(main())
