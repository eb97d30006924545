"""Tests for federated CIFAR-100, on a tiny file in TFF's exact schema built here."""

from __future__ import annotations

import numpy as np
import pytest
from tff_files import encode_example, write_sql_client_data

from fedjax_like.data.sources import CorruptDatasetError, DatasetNotFoundError, cifar100, download
from fedjax_like.data.sources import handles

TRAIN_IDS = [str(i) for i in range(12)]  # sorted(): '0', '1', '10', '11', '2', ...
TEST_IDS = [str(i) for i in range(3)]


def make_data(seed=0) -> dict:
  rng = np.random.default_rng(seed)
  data = {}
  for split, ids in (('train', TRAIN_IDS), ('test', TEST_IDS)):
    data[split] = {}
    for client in ids:
      n = int(rng.integers(1, 5))
      data[split][client] = {
          'coarse_label': rng.integers(0, 20, n),
          'image': rng.integers(0, 256, (n, 32, 32, 3)),
          'label': rng.integers(0, 100, n),
      }
  return data


def write(path, data) -> None:
  rows = {
      split: {
          c: [
              encode_example({
                  'coarse_label': ('int64', [a['coarse_label'][i]]),
                  'image': ('int64', a['image'][i].reshape(-1).tolist()),
                  'label': ('int64', [a['label'][i]]),
              })
              for i in range(len(a['label']))
          ]
          for c, a in clients.items()
      }
      for split, clients in data.items()
  }
  write_sql_client_data(path, rows)


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
  def no_network(url, start=0):
    pytest.fail(f'test tried to use the network: {url}')

  monkeypatch.setattr(download, '_open_url', no_network)
  monkeypatch.setattr(cifar100, '_NUM_CLIENTS', {'train': len(TRAIN_IDS), 'test': len(TEST_IDS)})
  yield
  handles.close_all()


def test_matches_tff_ids_order_names_shapes_dtypes_values(tmp_path):
  data = make_data()
  write(tmp_path / 'cifar100.sqlite', data)
  train, test = cifar100.load_data(cache_dir=tmp_path, download=False)
  assert train.client_ids[:5] == ['0', '1', '10', '11', '2']
  assert test.client_ids == ['0', '1', '2']
  for client_data, split in ((train, 'train'), (test, 'test')):
    for client, expected in data[split].items():
      elements = client_data.dataset_for_client(client).elements
      assert list(elements) == ['coarse_label', 'image', 'label']
      n = len(expected['label'])
      assert elements['image'].dtype == np.uint8 and elements['image'].shape == (n, 32, 32, 3)
      assert elements['label'].dtype == np.int64 and elements['label'].shape == (n,)
      assert elements['coarse_label'].dtype == np.int64
      for name in expected:
        np.testing.assert_array_equal(elements[name], expected[name])
  spec = train.element_spec
  assert (spec['image'].shape, spec['image'].dtype) == ((32, 32, 3), np.uint8)
  assert spec['label'].shape == ()


def test_wrong_image_size_names_the_client(tmp_path):
  data = make_data()
  data['train']['3']['image'] = data['train']['3']['image'][:, :16]
  write(tmp_path / 'cifar100.sqlite', data)
  train, _ = cifar100.load_data(cache_dir=tmp_path, download=False)
  message = "client '3', example 0: feature 'image' should hold 3072"
  with pytest.raises(CorruptDatasetError, match=message):
    train.dataset_for_client('3')


def test_offline_error(tmp_path):
  with pytest.raises(DatasetNotFoundError, match='cifar100.sqlite.lzma') as info:
    cifar100.load_data(cache_dir=tmp_path, download=False)
  assert str(tmp_path / 'cifar100.sqlite') in str(info.value)
