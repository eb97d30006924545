"""The Federated Core tutorial notebook executes top to bottom and prints what it promises."""

import os
import pathlib

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / 'notebooks' / 'custom_federated_algorithm.ipynb'


def test_custom_federated_algorithm_notebook_runs(monkeypatch):
  monkeypatch.setenv('JAX_PLATFORMS', os.environ.get('JAX_PLATFORMS', 'cpu'))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(
      notebook, timeout=120, kernel_name='python3', resources={'metadata': {'path': str(ROOT)}}
  )
  client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
  text = '\n'.join(
      output.get('text', '') for cell in notebook.cells for output in cell.get('outputs', [])
  )
  assert '({float32}@CLIENTS -> float32@SERVER)' in text
  assert 'TypeError: federated_sum expects a value of type {T}@CLIENTS' in text
  assert '(<state=<float32[5],float32[5],key<fry>>@SERVER,data={' in text
  assert "'the'" in text  # the most common word was found
