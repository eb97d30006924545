"""Tests for label_histogram (against a plain loop) and the PNG plot."""

from __future__ import annotations

import numpy as np
import pytest

from fedjax_like.data import partition as P


def test_histogram_matches_a_plain_count():
  rng = np.random.default_rng(0)
  labels = rng.choice(np.array(['cat', 'dog', 'emu']), 500)
  part = P.DirichletPartitioner(7, alpha=0.5, min_partition_size=0, seed=1)({'label': labels})
  hist = P.label_histogram(part, labels)
  assert hist.classes.tolist() == ['cat', 'dog', 'emu']
  expected = np.zeros((7, 3), dtype=np.int64)
  for c, ix in enumerate(part.index_lists()):
    for i in ix:
      expected[c, ['cat', 'dog', 'emu'].index(labels[i])] += 1
  np.testing.assert_array_equal(hist.counts, expected)
  np.testing.assert_allclose(hist.fractions().sum(axis=1), 1.0)
  with pytest.raises(ValueError, match='499 labels for a partition of 500'):
    P.label_histogram(part, labels[:-1])


@pytest.mark.parametrize('plot_type, size_unit', [('bar', 'absolute'), ('heatmap', 'percent')])
def test_plot_writes_a_png(tmp_path, plot_type, size_unit):
  pytest.importorskip('matplotlib')
  labels = np.random.default_rng(1).integers(0, 10, 2000)
  part = P.PathologicalPartitioner(40, num_classes_per_partition=2, seed=0)(labels)
  path = tmp_path / 'labels.png'
  fig = P.plot_label_distributions(
      part, labels, path, plot_type=plot_type, size_unit=size_unit, max_num_partitions=25
  )
  data = path.read_bytes()
  assert data.startswith(b'\x89PNG\r\n\x1a\n') and len(data) > 5000
  assert len(fig.axes[0].get_xticks()) == 25
  with pytest.raises(ValueError, match='plot_type'):
    P.plot_label_distributions(part, labels, plot_type='pie')
