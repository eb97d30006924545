"""Per-client label histograms of a partition, and a PNG plot of them.

``label_histogram(partition, labels)`` counts each client's examples per class in one
``np.bincount`` over (client, class) pairs: ``counts[c, k]`` is the number of client ``c``'s
examples whose label is ``classes[k]`` (classes: the sorted distinct labels of the whole data).

``plot_label_distributions(partition, labels, path)`` draws the histogram as Flower Datasets'
function of that name does (stacked bars per client or a heatmap, in examples or percent) and
writes a PNG. It needs matplotlib (the ``sim`` extra) and uses no pyplot state.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Literal

import numpy as np

from fedjax_like.data.partition import base


@dataclasses.dataclass(frozen=True)
class LabelHistogram:
  """Examples per client and class.

  Attributes:
    counts: int64 ``[num_clients, num_classes]``.
    classes: ``[num_classes]``: the sorted distinct labels of the data.
    client_ids: the partition's client ids, one per row of ``counts``.
  """

  counts: np.ndarray
  classes: np.ndarray
  client_ids: tuple[str, ...]

  def fractions(self) -> np.ndarray:
    """float64 ``[num_clients, num_classes]``: each row divided by its total (0 for empty rows)."""
    totals = self.counts.sum(axis=1, keepdims=True)
    return np.divide(self.counts, totals, out=np.zeros(self.counts.shape), where=totals > 0)


def label_histogram(partition: base.Partition, labels: Any) -> LabelHistogram:
  """Counts each client's examples per class.

  Args:
    partition: a partition of data with ``len(labels)`` examples.
    labels: ``[num_examples]`` labels of the partitioned data (or a table and, through a
      partitioner's ``partition_by``, its column: pass ``table['label']``).
  """
  labels = base.column(labels, None, 'label_histogram')
  if len(labels) != partition.num_examples:
    raise ValueError(
        f'label_histogram: {len(labels)} labels for a partition of {partition.num_examples} '
        'examples; pass the labels of the partitioned data.'
    )
  classes, codes = base.encode_labels(labels)
  k = len(classes)
  rows = np.repeat(np.arange(len(partition), dtype=np.int64), partition.sizes)
  flat = np.bincount(rows * k + codes[partition.indices], minlength=len(partition) * k)
  return LabelHistogram(flat.reshape(len(partition), k), classes, partition.client_ids)


def plot_label_distributions(
    partition: base.Partition,
    labels: Any,
    path: str | os.PathLike[str] | None = None,
    *,
    plot_type: Literal['bar', 'heatmap'] = 'bar',
    size_unit: Literal['absolute', 'percent'] = 'absolute',
    max_num_partitions: int | None = 30,
    title: str = 'Per Partition Labels Distribution',
):
  """Draws the per-client label histogram; writes a PNG at ``path`` when given.

  Args:
    partition: the partition to draw.
    labels: ``[num_examples]`` labels of the partitioned data.
    path: where to write the PNG (None: only return the figure).
    plot_type: ``'bar'`` (one stacked bar per client) or ``'heatmap'`` (clients x classes).
    size_unit: ``'absolute'`` (examples) or ``'percent'`` (of each client's examples).
    max_num_partitions: draw only the first this many clients (None: all).
    title: the figure's title.

  Returns:
    The ``matplotlib.figure.Figure``.
  """
  if plot_type not in ('bar', 'heatmap'):
    raise ValueError(f"plot_type must be 'bar' or 'heatmap'; got {plot_type!r}.")
  if size_unit not in ('absolute', 'percent'):
    raise ValueError(f"size_unit must be 'absolute' or 'percent'; got {size_unit!r}.")
  try:
    from matplotlib.figure import Figure
  except ImportError as e:
    raise ImportError(
        'plot_label_distributions needs matplotlib: pip install "fedjax_like[sim]".'
    ) from e
  hist = label_histogram(partition, labels)
  shown = slice(None) if max_num_partitions is None else slice(0, max_num_partitions)
  values = hist.fractions() * 100 if size_unit == 'percent' else hist.counts.astype(np.float64)
  values = values[shown]
  ids = hist.client_ids[shown]
  unit = 'percent of examples' if size_unit == 'percent' else 'examples'
  fig = Figure(figsize=(max(6.0, 0.25 * len(ids) + 2), 4.5), layout='constrained')
  ax = fig.add_subplot()
  if plot_type == 'bar':
    bottom = np.zeros(len(ids))
    cmap = _colormap(len(hist.classes))
    for k, label in enumerate(hist.classes.tolist()):
      ax.bar(np.arange(len(ids)), values[:, k], bottom=bottom, color=cmap(k), label=str(label))
      bottom += values[:, k]
    ax.set_ylabel(unit)
    if len(hist.classes) <= 20:
      ax.legend(title='label', fontsize='small', loc='upper left', bbox_to_anchor=(1.0, 1.0))
  else:
    image = ax.imshow(values.T, aspect='auto', interpolation='nearest', cmap='viridis')
    fig.colorbar(image, ax=ax, label=unit)
    if len(hist.classes) <= 40:
      ax.set_yticks(np.arange(len(hist.classes)), [str(c) for c in hist.classes.tolist()])
    ax.set_ylabel('label')
  if len(ids) <= 60:
    ax.set_xticks(np.arange(len(ids)), list(ids), rotation=90, fontsize='small')
  ax.set_xlabel('client')
  ax.set_title(title)
  if path is not None:
    fig.savefig(os.fspath(path), format='png', dpi=100)
  return fig


def _colormap(num_classes: int):
  """``k -> color`` for class ``k``: qualitative colors up to 20 classes, then a gradient."""
  from matplotlib import colormaps

  if num_classes <= 20:
    return colormaps['tab10' if num_classes <= 10 else 'tab20']
  gradient = colormaps['viridis']
  return lambda k: gradient(k / (num_classes - 1))
