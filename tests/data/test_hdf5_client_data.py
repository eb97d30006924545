"""Tests for the legacy HDF5 reader (TFF's HDF5ClientData layout), on files built here."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest

from fedjax_like.data.sources import CorruptDatasetError, handles, hdf5_client_data

h5py = pytest.importorskip('h5py')

CLIENTS = {'f2': 3, 'F1': 1, 'f10': 2}  # sorted(): 'F1' < 'f10' < 'f2'


@pytest.fixture(autouse=True)
def _close():
  yield
  handles.close_all()


@pytest.fixture
def path(tmp_path):
  p = tmp_path / 'x_train.h5'
  with h5py.File(p, 'w') as f:
    examples = f.create_group('examples')
    for client, n in CLIENTS.items():
      group = examples.create_group(client)
      group.create_dataset('label', data=np.arange(n, dtype=np.int64))
      group.create_dataset('pixels', data=np.full((n, 2, 2), n, dtype=np.float64))
  return str(p)


def test_ids_sizes_and_arrays(path):
  reader = handles.open_shared(hdf5_client_data.Hdf5Reader, path)
  data = reader.client_data(('label', 'pixels'))
  assert data.client_ids == ['F1', 'f10', 'f2']
  assert data.client_sizes() == CLIENTS
  elements = data.dataset_for_client('f2').elements
  assert list(elements) == ['label', 'pixels']
  np.testing.assert_array_equal(elements['label'], [0, 1, 2])
  assert elements['pixels'].shape == (3, 2, 2)
  assert handles.open_shared(hdf5_client_data.Hdf5Reader, path) is reader


def _to_float32(path, client_id, arrays):
  return {k: v.astype(np.float32) for k, v in arrays.items()}


def test_postprocess_and_pickling(path):
  data = handles.open_shared(hdf5_client_data.Hdf5Reader, path).client_data(
      ('pixels',), _to_float32
  )
  copy = pickle.loads(pickle.dumps(data))
  assert copy.dataset_for_client('F1').elements['pixels'].dtype == np.float32


def test_missing_feature_and_bad_files_are_reported(path, tmp_path):
  reader = hdf5_client_data.Hdf5Reader(path)
  with pytest.raises(CorruptDatasetError, match="client 'f2' lacks"):
    reader.read('f2', ('label', 'text'))
  with pytest.raises(CorruptDatasetError, match='lacks a "text" dataset'):
    reader.clients('text')
  reader.close()
  (tmp_path / 'junk.h5').write_bytes(b'junk' * 10)
  with pytest.raises(CorruptDatasetError, match='not a readable HDF5 file.*delete it'):
    hdf5_client_data.Hdf5Reader(str(tmp_path / 'junk.h5'))
  with h5py.File(tmp_path / 'other.h5', 'w') as f:
    f.create_group('something')
  with pytest.raises(CorruptDatasetError, match='no top-level group "examples"'):
    hdf5_client_data.Hdf5Reader(str(tmp_path / 'other.h5'))


def test_without_h5py_says_how_to_install_it(path, monkeypatch):
  monkeypatch.setitem(sys.modules, 'h5py', None)
  with pytest.raises(ImportError, match='pip install h5py'):
    hdf5_client_data.Hdf5Reader(path)
