"""notebooks/quickstart.ipynb executes top to bottom (nbclient), offline, on CPU, and learns."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / 'notebooks' / 'quickstart.ipynb'


def _text(cell):
  parts = []
  for output in cell.get('outputs', []):
    parts.append(output.get('text', ''))
    parts.append(output.get('data', {}).get('text/plain', ''))
  return ''.join(parts)


def test_quickstart_notebook_runs_offline(tmp_path, monkeypatch):
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  # The kernel inherits this environment: CPU, no cached EMNIST, and the checkout importable.
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  monkeypatch.setenv('FEDJAX_LIKE_CACHE', str(tmp_path / 'empty-cache'))
  monkeypatch.setenv('PYTHONPATH', str(ROOT))
  monkeypatch.setenv('TMPDIR', str(tmp_path))  # where the notebook's run directory goes
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  first = notebook.cells[0]
  assert first.cell_type == 'code' and 'SOURCE_REPOSITORY' in first.source  # installs (Colab)
  client = nbclient.NotebookClient(
      notebook, timeout=300, kernel_name='python3',
      resources={'metadata': {'path': str(NOTEBOOK.parent)}},  # run from the checkout
  )
  client.execute()
  assert f'fedjax_like from the local checkout {ROOT}' in _text(notebook.cells[0])

  code = [c for c in notebook.cells if c.cell_type == 'code']
  for cell in code:
    assert not [o for o in cell.outputs if o.output_type == 'error'], _text(cell)
  seed_output = _text(code[2])
  assert 'offline digits' in seed_output
  accuracies = [float(v) for v in re.findall(r'^([0-9.]+)$', seed_output, flags=re.M)]
  assert len(accuracies) == 5 and accuracies[-1] > accuracies[0]

  experiment_output = _text(code[3])
  final = float(re.search(r'round 40: eval accuracy ([0-9.]+)', experiment_output).group(1))
  assert final > 0.5, experiment_output
  assert 'metrics.csv' in experiment_output and 'checkpoints [20, 30, 40]' in experiment_output
  assert any('image/png' in o.get('data', {}) for o in code[4].outputs)
