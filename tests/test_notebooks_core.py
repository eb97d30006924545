"""The Federated Core tutorial notebook executes top to bottom and prints what it promises; every
notebook's first cell installs the package from the checkout it runs in, or from the project's
source repository (never a bare package-index name)."""

import json
import os
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / 'notebooks').glob('*.ipynb'))
NOTEBOOK = ROOT / 'notebooks' / 'custom_federated_algorithm.ipynb'


def _install_cell(path):
  cell = json.loads(path.read_text())['cells'][0]
  assert cell['cell_type'] == 'code', path
  return ''.join(cell['source'])


def test_every_notebook_installs_from_the_source_repository_or_the_checkout(monkeypatch, tmp_path):
  assert len(NOTEBOOKS) >= 2
  source = re.search(r'^Source = "(.+)"$', (ROOT / 'pyproject.toml').read_text(), re.M).group(1)
  cells = {path.name: _install_cell(path) for path in NOTEBOOKS}
  for name, cell in cells.items():
    assert f"SOURCE_REPOSITORY = '{source}'" in cell, name  # one URL, the project's own
    assert not re.search(r"pip install[^\n]*fedjax_like\[", cell), name  # no bare index name
  # Away from a checkout and without the package, the cell installs from the repository.
  import importlib.util

  calls = []
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(subprocess, 'run', lambda args, check: calls.append(args[3:]))
  monkeypatch.setattr(
      importlib.util,
      'find_spec',
      lambda name: None if name == 'fedjax_like' else real_find_spec(name),
  )
  monkeypatch.chdir(tmp_path)
  exec(compile(cells['quickstart.ipynb'], 'quickstart cell 1', 'exec'), {})
  assert calls == [['install', '-q', f'fedjax_like[digits,sim] @ git+{source}']]


def test_custom_federated_algorithm_notebook_runs(monkeypatch):
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  monkeypatch.setenv('JAX_PLATFORMS', os.environ.get('JAX_PLATFORMS', 'cpu'))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(
      notebook, timeout=120, kernel_name='python3',
      resources={'metadata': {'path': str(ROOT / 'notebooks')}},
  )
  client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
  text = '\n'.join(
      output.get('text', '') for cell in notebook.cells for output in cell.get('outputs', [])
  )
  assert f'fedjax_like from the local checkout {ROOT}' in text  # the install cell, local mode
  assert '({float32}@CLIENTS -> float32@SERVER)' in text
  assert 'TypeError: federated_sum expects a value of type {T}@CLIENTS' in text
  assert '(<state=<float32[5],float32[5],key<fry>>@SERVER,data={' in text
  assert "'the'" in text  # the most common word was found
