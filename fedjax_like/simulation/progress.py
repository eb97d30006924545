"""Progress over rounds: a tqdm bar with rounds/s, clients/s and the latest accuracies.

Modes: ``'bar'`` (a tqdm bar on stderr), ``'log'`` (a plain line per evaluation round, for log
files), ``'none'``, and ``'auto'``: a bar when stderr is a terminal, otherwise nothing, so batch
jobs and test runs stay quiet.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Mapping

MODES = ('auto', 'bar', 'log', 'none')


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
      mode = 'bar' if is_tty else 'none'
    self.mode = mode
    self._total = total_rounds
    self._start_time = time.perf_counter()
    self._rounds = 0
    self._clients = 0
    self._train_accuracy = None
    self._eval_accuracy = None
    self._bar = None
    if mode == 'bar':
      from tqdm.auto import tqdm

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
