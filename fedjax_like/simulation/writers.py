"""Metric writers: where each round's scalars go (CSV, TensorBoard, a PNG plot of the curves).

The writer protocol (:class:`MetricWriter`): any object with a ``write`` method; ``start`` and
``close`` are optional (the training loop calls them only when present):

- ``write(record)`` (required): one round's record, a flat ``{name: number}`` with
  ``record['round']``, called once per finished round, in order.
- ``start(start_round, history)`` (optional): called once before the first round of this call;
  the run begins after ``start_round`` completed rounds (0 for a fresh run) and ``history`` holds
  the records of those rounds (restored from the checkpoint). A writer resuming a file drops
  whatever it holds for later rounds: those rounds are being redone.
- ``close()`` (optional): flush and release (the plot is drawn here); called once at the end,
  also when the run fails.

A plain function is not a writer; ``class Print: write = staticmethod(print)`` is.

Records are flat: ``round``, ``num_clients``, ``elapsed_s``, then the process's metrics flattened
with ``/`` (``client_work/train/accuracy``), ``privacy/epsilon`` for a DP run with an accountant,
then ``eval/<metric>`` on evaluation rounds.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

Record = Mapping[str, float]


class MetricWriter(Protocol):
  """Receives each finished round's record; ``start`` and ``close`` are optional (see above)."""

  def write(self, record: Record) -> None: ...


def check_writer(writer: Any) -> None:
  """Raises TypeError, naming the writer, unless it has a callable ``write`` (and ``start`` and
  ``close``, where present, are callable)."""
  for name, required in (('write', True), ('start', False), ('close', False)):
    method = getattr(writer, name, None)
    if (required or method is not None) and not callable(method):
      raise TypeError(
          f'metrics_writers: {writer!r} has no callable {name}(); a writer needs write(record) '
          'and may have start(start_round, history) and close() (see '
          'fedjax_like.simulation.writers).'
      )


def _replace_atomically(path: str, tmp: str, write) -> None:
  """``write(tmp)`` then renames ``tmp`` to ``path``; ``tmp`` is removed if anything fails (a full
  disk), so no temporary file is left behind on any path."""
  try:
    write(tmp)
    os.replace(tmp, path)
  except BaseException:
    try:
      os.remove(tmp)
    except OSError:
      pass
    raise


def _atomic_write_text(path: str, text: str) -> None:
  def write(tmp):
    with open(tmp, 'w', newline='') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())

  _replace_atomically(path, f'{path}.tmp-{os.getpid()}', write)


class CsvWriter:
  """``metrics.csv``: one row per round, a column per metric (blank where a round lacks it).

  Rows are appended as rounds finish. When a new metric appears the header grows and the file is
  rewritten once, atomically. On resume, rows after the resumed round are dropped, so the file never
  holds a round twice.
  """

  def __init__(self, path: str | os.PathLike[str]):
    self.path = os.fspath(path)
    self._columns: list[str] = []
    self._rows: list[Record] = []
    self._file = None
    self._writer = None

  def _rewrite(self) -> None:
    self.close()
    for row in self._rows:
      self._columns += [k for k in row if k not in self._columns]
    lines = [','.join(self._columns)] if self._columns else []
    lines += [','.join(_cell(row.get(c)) for c in self._columns) for row in self._rows]
    _atomic_write_text(self.path, ''.join(line + '\n' for line in lines))
    self._file = open(self.path, 'a', newline='')  # noqa: SIM115 - closed in close()
    self._writer = csv.writer(self._file, lineterminator='\n')

  def start(self, start_round: int, history: Sequence[Record]) -> None:
    rows = []
    if start_round > 0 and os.path.exists(self.path):
      with open(self.path, newline='') as f:
        for row in csv.DictReader(f):
          if row.get('round') and int(float(row['round'])) <= start_round:
            rows.append({k: v for k, v in row.items() if v not in ('', None)})
    if start_round > 0 and not rows:
      rows = [dict(r) for r in history if r['round'] <= start_round]
    self._columns, self._rows = [], rows
    self._rewrite()

  def write(self, record: Record) -> None:
    self._rows.append(dict(record))
    if any(k not in self._columns for k in record):
      self._rewrite()
      return
    self._writer.writerow([_cell(record.get(c)) for c in self._columns])
    self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None


def _cell(value: Any) -> str:
  if value is None:
    return ''
  if isinstance(value, float):
    return repr(value) if math.isfinite(value) else str(value)
  return str(value)


class TensorBoardWriter:
  """TensorBoard event files in ``logdir`` (tensorboardX); a scalar per metric, step = round.

  On resume it opens with ``purge_step = start_round + 1``, so TensorBoard discards the events of
  rounds being redone.
  """

  _SKIP = ('round',)

  def __init__(self, logdir: str | os.PathLike[str]):
    self.logdir = os.fspath(logdir)
    self._writer = None

  def start(self, start_round: int, history: Sequence[Record]) -> None:
    try:
      from tensorboardX import SummaryWriter
    except ImportError as e:  # pragma: no cover - exercised only without the extra
      raise ImportError(
          "TensorBoard logs need tensorboardX: pip install 'fedjax_like[sim]'."
      ) from e
    purge = start_round + 1 if start_round > 0 else None
    self._writer = SummaryWriter(self.logdir, purge_step=purge, flush_secs=30)

  def write(self, record: Record) -> None:
    step = int(record['round'])
    for name, value in record.items():
      if name not in self._SKIP and value is not None:
        self._writer.add_scalar(name, float(value), step)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


class CurvePlot:
  """Draws ``path`` (PNG) at ``close()``: accuracy and loss by round, train and eval (and the
  privacy spent, when the records hold ``privacy/epsilon``)."""

  def __init__(self, path: str | os.PathLike[str], title: str = ''):
    self.path = os.fspath(path)
    self.title = title
    self._history: list[Record] = []

  def start(self, start_round: int, history: Sequence[Record]) -> None:
    self._history = [r for r in history if r['round'] <= start_round]

  def write(self, record: Record) -> None:
    self._history.append(dict(record))

  def close(self) -> None:
    if self._history:
      plot_curves(self._history, self.path, self.title)


def _series(history: Sequence[Record], suffix: str) -> tuple[str | None, list[int], list[float]]:
  names = []
  for record in history:
    names += [k for k in record if k.endswith(suffix) and k not in names]
  if not names:
    return None, [], []
  name = names[0]
  points = [(int(float(r['round'])), float(r[name])) for r in history if r.get(name) is not None]
  return name, [p[0] for p in points], [p[1] for p in points]


def plot_curves(history: Sequence[Record], path: str | os.PathLike[str], title: str = '') -> str:
  """Saves train and eval accuracy and loss by round as a PNG; returns the path.

  Train curves are ``*train/accuracy`` and ``*train/loss`` (e.g. ``client_work/train/accuracy``),
  eval curves ``eval/accuracy`` and ``eval/loss``; a third panel shows ``privacy/epsilon`` by
  round when the records hold it. Uses matplotlib's Agg canvas directly, so no
  global backend is changed (safe inside notebooks).
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  privacy = _series(history, 'privacy/epsilon')
  panels = 3 if privacy[1] else 2
  figure = Figure(figsize=(5 * panels, 4), dpi=100)
  FigureCanvasAgg(figure)
  if privacy[1]:
    axes = figure.add_subplot(1, 3, 3)
    axes.plot(privacy[1], privacy[2], '-', label='epsilon spent')
    axes.set_xlabel('round')
    axes.set_ylabel('epsilon')
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
  for i, metric in enumerate(('accuracy', 'loss')):
    axes = figure.add_subplot(1, panels, i + 1)
    for suffix, label, style in (
        (f'train/{metric}', 'train', '-'),
        (f'eval/{metric}', 'eval', 'o-'),
    ):
      name, rounds, values = _series(history, suffix)
      if name is not None and rounds:
        axes.plot(rounds, values, style, label=f'{label} ({name})', markersize=3)
    axes.set_xlabel('round')
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    if axes.lines:
      axes.legend(fontsize=8)
  if title:
    figure.suptitle(title)
  figure.tight_layout()
  path = os.fspath(path)
  tmp = f'{path}.tmp-{os.getpid()}.png'
  _replace_atomically(path, tmp, lambda name: figure.savefig(name, format='png'))
  return path
