"""Tests for fl.data.tfds: tensorflow-datasets read as NumPy through data sources, offline, with no
TensorFlow. Two kinds of data: tfds's own mock examples (``tfds.testing.mock_data``) for a
registered dataset, and a small builder prepared here from files the test writes (array_record and
parquet). Every test runs with the network blocked (a connection attempt fails at once) and a
deadline (a hang fails loudly)."""

from __future__ import annotations

import io
import os
import sys

import numpy as np
import pytest

tfds = pytest.importorskip('tensorflow_datasets')
PIL_Image = pytest.importorskip('PIL.Image')

import _tfds_offline  # noqa: E402  (tests/data/, on the path by conftest.py)

import fedjax_like as fl  # noqa: E402
from fedjax_like.data import partition as P  # noqa: E402
from fedjax_like.data.sources import DatasetNotFoundError  # noqa: E402
from fedjax_like.data.sources import tfds as fl_tfds  # noqa: E402

_DEADLINE_S = 60
_USERS = ('ann', 'bo', 'cy', 'dee')


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
  """No network, no TensorFlow, no real tfds data dir, a deadline: each attempt to reach the
  network or import TensorFlow raises at once and fails the test even if tfds swallows it."""
  yield from _tfds_offline.guard(monkeypatch, tmp_path, _DEADLINE_S)


def _rows(n: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  return {
      'image': rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8),
      'label': rng.integers(0, 3, n),
      'user': np.array([_USERS[i % len(_USERS)] for i in range(n)]),
      'score': rng.normal(size=n).astype(np.float32),
  }


class FlTestDigits(tfds.core.GeneratorBasedBuilder):
  """Tiny images with a label, a user and a score, read from ``manual_dir/rows.npz``."""

  # tfds resolves a dotted module (tests.data.test_tfds) through importlib_resources, a backport
  # not installed on Python >= 3.9; a one-part module name takes its other path.
  __module__ = 'fl_test_digits_builder'
  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Written by the test.'

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 1)),
            'label': tfds.features.ClassLabel(num_classes=3),
            'user': tfds.features.Text(),
            'score': np.float32,
            'index': np.int64,
        }),
        supervised_keys=('image', 'label'),
    )

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(os.path.join(dl_manager.manual_dir, 'rows.npz'))}

  def _generate_examples(self, path):
    rows = np.load(path)
    for i in range(len(rows['label'])):
      png = io.BytesIO()
      PIL_Image.fromarray(rows['image'][i, :, :, 0]).save(png, format='PNG')
      yield i, {
          'image': png.getvalue(), 'label': int(rows['label'][i]), 'user': str(rows['user'][i]),
          'score': float(rows['score'][i]), 'index': i,
      }


def _prepare(tmp_path, file_format: str, n: int) -> tuple[str, dict[str, np.ndarray]]:
  manual = tmp_path / 'manual'
  manual.mkdir(exist_ok=True)
  rows = _rows(n)
  np.savez(manual / 'rows.npz', **rows)
  data_dir = str(tmp_path / file_format)
  builder = FlTestDigits(data_dir=data_dir, file_format=file_format)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual))
  )
  return data_dir, rows


@pytest.mark.parametrize('file_format', ['array_record', 'parquet'])
def test_local_builder_natural_ids_by_default(tmp_path, file_format):
  data_dir, rows = _prepare(tmp_path, file_format, 40)  # tfds 4.9.10 writes parquet whole <= 100.
  train = fl.data.tfds.load('fl_test_digits', 'train', data_dir=data_dir, download=False)
  assert train.client_ids == sorted(_USERS)
  seen = []
  for user in train.client_ids:
    elements = train.dataset_for_client(user).elements
    index = elements['index']
    seen += index.tolist()
    assert elements['image'].dtype == np.uint8 and elements['image'].shape == (len(index), 8, 8, 1)
    assert elements['label'].dtype == np.int64 and elements['score'].dtype == np.float32
    np.testing.assert_array_equal(elements['image'], rows['image'][index])
    np.testing.assert_array_equal(elements['label'], rows['label'][index])
    np.testing.assert_array_equal(elements['score'], rows['score'][index])
    assert elements['user'].dtype == object and set(elements['user'].tolist()) == {user.encode()}
  assert sorted(seen) == list(range(40))
  assert 'tensorflow' not in sys.modules


def test_local_builder_with_a_partitioner_and_feature_subset(tmp_path):
  data_dir, rows = _prepare(tmp_path, 'array_record', 60)
  partitioner = P.DirichletPartitioner(5, alpha=1.0, min_partition_size=2, seed=0)
  train = fl.data.tfds.load('fl_test_digits', 'train', partitioner, data_dir=data_dir,
                            features=['image', 'index'])
  assert train.client_ids == ['0', '1', '2', '3', '4']
  elements = train.dataset_for_client('3').elements
  assert sorted(elements) == ['image', 'index']  # 'label' was read to partition, not served.
  np.testing.assert_array_equal(elements['image'], rows['image'][elements['index']])
  assert sum(train.client_sizes().values()) == 60
  again = fl.data.tfds.load('fl_test_digits', 'train', partitioner, data_dir=data_dir)
  np.testing.assert_array_equal(again.dataset_for_client('3').elements['index'], elements['index'])


def test_mock_data_of_a_registered_dataset_without_tensorflow():
  with tfds.testing.mock_data(num_examples=60, policy=tfds.testing.MockPolicy.USE_CODE):
    train = fl.data.tfds.load('mnist', 'train', P.IidPartitioner(6))
  assert train.client_ids == [str(i) for i in range(6)]
  elements = train.dataset_for_client('2').elements
  assert elements['image'].shape == (10, 28, 28, 1) and elements['image'].dtype == np.uint8
  assert elements['label'].dtype == np.int64 and np.all((0 <= elements['label']) &
                                                        (elements['label'] < 10))
  assert 'tensorflow' not in sys.modules


def test_mock_text_dataset_with_a_user_field():
  with tfds.testing.mock_data(num_examples=30, policy=tfds.testing.MockPolicy.USE_CODE):
    train = fl.data.tfds.load('sentiment140', 'train')  # Natural ids from its 'user' field.
    arrays = fl_tfds.to_arrays(fl_tfds.data_source('sentiment140', 'train'))
  users = np.unique(arrays['user'].astype('S')).astype(str).tolist()
  assert train.client_ids == [u.encode().decode() for u in users]
  assert arrays['text'].dtype == object and all(isinstance(t, bytes) for t in arrays['text'])
  assert sum(train.client_sizes().values()) == 30


def test_errors_name_the_problem(tmp_path, monkeypatch):
  with tfds.testing.mock_data(num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE):
    with pytest.raises(ValueError, match='has no user field'):
      fl.data.tfds.load('mnist', 'train')
    with pytest.raises(KeyError, match=r"no column 'digit'.*features \['image', 'label'\]"):
      fl.data.tfds.load('mnist', 'train', P.ShardPartitioner(2, partition_by='digit',
                                                             shard_size=5))
  with pytest.raises(DatasetNotFoundError, match='not prepared in .*download=True'):
    fl.data.tfds.load('fl_test_digits', data_dir=str(tmp_path / 'empty'), download=False)
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)
  with pytest.raises(ImportError, match=r'fedjax_like\[tfds\]'):
    fl.data.tfds.load('mnist')


class _ShortSource:
  """A data source whose files hold fewer records than its info counts."""

  def __init__(self, info):
    self.dataset_info, self.split = info, 'train'

  def __len__(self):
    return 3


def test_incomplete_files_are_an_error(tmp_path):
  data_dir, _ = _prepare(tmp_path, 'array_record', 5)
  info = tfds.builder('fl_test_digits', data_dir=data_dir).info
  with pytest.raises(ValueError, match='hold 3 records but the dataset info counts 5'):
    fl_tfds.to_arrays(_ShortSource(info))


def test_preparing_that_needs_tensorflow_says_how_to_prepare_elsewhere(tmp_path, monkeypatch):
  def needs_tensorflow(*args, **kwargs):
    raise ModuleNotFoundError("No module named 'tensorflow'", name='tensorflow')

  monkeypatch.setattr(tfds, 'data_source', needs_tensorflow)
  with pytest.raises(ImportError, match="Preparing 'fl_test_digits' needs TensorFlow"):
    fl.data.tfds.load('fl_test_digits', data_dir=str(tmp_path / 'empty'))
  with pytest.raises(ValueError, match="file_format must be 'array_record' or 'parquet'"):
    fl.data.tfds.load('fl_test_digits', data_dir=str(tmp_path / 'empty'), file_format='tfrecord')


def test_tfrecord_only_data_is_refused_with_the_way_out(monkeypatch):
  class Prepared:
    data_dir = '/data/mnist/3.0.1'
    info = type('Info', (), {'file_format': tfds.core.FileFormat.TFRECORD})()

    def is_prepared(self):
      return True

  monkeypatch.setattr(tfds, 'builder', lambda *a, **k: Prepared())
  with pytest.raises(ValueError, match="as tfrecord, which has no random access.*array_record"):
    fl.data.tfds.load('mnist')
