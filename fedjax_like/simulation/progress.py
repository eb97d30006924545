"""Progress over rounds: a tqdm bar with rounds/s, clients/s and the latest accuracies.

Modes: ``'bar'`` (a tqdm bar on stderr), ``'log'`` (a plain line per evaluation round, for log
files), ``'none'``, and ``'auto'``: a bar on a terminal and in a notebook (a widget where
ipywidgets is installed), otherwise a line per evaluation round, so a run writing to a log file
reports as it goes. Except under ``'none'``, a run starts with one line saying where it runs
(:func:`execution_summary`: JAX version, backend, devices, execution strategy).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
from collections.abc import Mapping

MODES = ('auto', 'bar', 'log', 'none')


def in_notebook() -> bool:
  """Whether this process is a Jupyter (or Colab) kernel: its IPython shell is ipykernel's."""
  ipython = sys.modules.get('IPython')
  shell = getattr(ipython, 'get_ipython', lambda: None)() if ipython is not None else None
  return any(cls.__name__ == 'ZMQInteractiveShell' for cls in type(shell).__mro__)


def execution_summary(process, num_clients: int) -> str:
  """One line: JAX version, backend, devices, and how ``process`` runs a cohort of
  ``num_clients`` (its runtime's strategy, ``auto`` resolved, and the convolution lowering)."""
  import jax

  from fedjax_like.core.engine.runtime import default_runtime

  runtime = getattr(process, 'runtime', None) or default_runtime()
  config = runtime.config
  devices = jax.devices()
  kinds = sorted({d.device_kind for d in devices})
  strategy = runtime.strategy_for(num_clients)
  chosen = f'{strategy} (auto)' if config.strategy == 'auto' else strategy
  return (
      f'JAX {jax.__version__} on {jax.default_backend()}: {len(devices)} device'
      f'{"s" if len(devices) != 1 else ""} ({", ".join(kinds)}); execution {chosen} for '
      f'{num_clients} clients a round, convolutions {config.lowering}.'
  )


def _latest(record: Mapping[str, float], suffix: str) -> float | None:
  for name, value in record.items():
    if name.endswith(suffix) and value is not None:
      return float(value)
  return None


class Progress:
  """Reports each finished round.

  Args:
    total_rounds: the last round of the run.
    start_round: rounds already done (a resumed run starts its bar there).
    mode: one of :data:`MODES`.
    stream: where to write (default stderr).
  """

  def __init__(self, total_rounds: int, start_round: int = 0, mode: str = 'auto', stream=None):
    if mode not in MODES:
      raise ValueError(f'progress must be one of {MODES}; got {mode!r}.')
    self._stream = stream or sys.stderr
    if mode == 'auto':
      is_tty = getattr(self._stream, 'isatty', lambda: False)()
      has_tqdm = importlib.util.find_spec('tqdm') is not None
      mode = 'bar' if (is_tty or in_notebook()) and has_tqdm else 'log'
    self.mode = mode
    self._total = total_rounds
    self._start_time = time.perf_counter()
    self._rounds = 0
    self._clients = 0
    self._train_accuracy = None
    self._eval_accuracy = None
    self._bar = None
    if mode == 'bar':
      from tqdm import tqdm

      if in_notebook() and importlib.util.find_spec('ipywidgets') is not None:
        from tqdm.notebook import tqdm

      # A terminal that reports no size (some ptys) would make tqdm draw nothing: use a fallback.
      size = shutil.get_terminal_size((100, 24))
      self._bar = tqdm(
          total=total_rounds,
          initial=start_round,
          unit='round',
          file=self._stream,
          ncols=min(size.columns, 140),
          nrows=max(size.lines, 2),
          smoothing=0.1,
      )

  def header(self, text: str) -> None:
    """A line said once, before the first round (nothing under ``'none'``)."""
    if self._bar is not None:
      self._bar.write(text, file=self._stream)
    elif self.mode == 'log':
      print(text, file=self._stream, flush=True)

  def update(self, record: Mapping[str, float]) -> None:
    """One finished round's record (``round``, ``num_clients``, metrics)."""
    self._rounds += 1
    self._clients += int(record.get('num_clients', 0))
    train = _latest(record, 'train/accuracy')
    evaluated = _latest(record, 'eval/accuracy')
    self._train_accuracy = train if train is not None else self._train_accuracy
    self._eval_accuracy = evaluated if evaluated is not None else self._eval_accuracy
    elapsed = max(time.perf_counter() - self._start_time, 1e-9)
    if self._bar is not None:
      postfix = {'clients/s': f'{self._clients / elapsed:.1f}'}
      if self._train_accuracy is not None:
        postfix['train_acc'] = f'{self._train_accuracy:.4f}'
      if self._eval_accuracy is not None:
        postfix['eval_acc'] = f'{self._eval_accuracy:.4f}'
      if record.get('privacy/epsilon') is not None:
        postfix['epsilon'] = f"{record['privacy/epsilon']:.3g}"
      self._bar.set_postfix(postfix, refresh=False)
      self._bar.update(1)
    elif self.mode == 'log' and evaluated is not None:
      line = (
          f'round {int(record["round"])}/{self._total}: '
          f'{self._rounds / elapsed:.2f} rounds/s, {self._clients / elapsed:.1f} clients/s'
      )
      if self._train_accuracy is not None:
        line += f', train accuracy {self._train_accuracy:.4f}'
      line += f', eval accuracy {evaluated:.4f}'
      if record.get('privacy/epsilon') is not None:
        line += f", epsilon {record['privacy/epsilon']:.4g}"
      print(line, file=self._stream, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None
