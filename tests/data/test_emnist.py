"""Tests for the federated EMNIST source, on small files built here in TFF's exact formats.

No network: every test runs with the module's one network entry point (``_open_url``) replaced by a
function that fails the test, except the download tests, which serve local bytes through a fake.
The tf.train.Example bytes are made by the independent encoder in tff_files.py (cross-checked
against the protobuf runtime in test_tf_example.py).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import lzma
import os
import pickle
import sqlite3
import sys
import tarfile
import urllib.error

import numpy as np
import pytest
from tff_files import encode_example, write_sql_client_data

from fedjax_like.data.sources import (
  DatasetNotFoundError,
  download,
  emnist,
  handles,
  tf_example_batch,
)

# Small stand-ins for the real populations. Ids sort differently from insertion order, and
# 'F0001_00' < 'f0000_14' in code-point order (TFF sorts with Python's sorted()).
DIGIT_CLIENTS = {'f0100_07': 45, 'F0001_00': 3, 'f0000_14': 7}
ALL_CLIENTS = {**DIGIT_CLIENTS, 'f0250_33': 5}
TEST_SIZES = {'f0100_07': 4, 'F0001_00': 1, 'f0000_14': 2, 'f0250_33': 1}
BASE_URL = 'https://storage.googleapis.com/tff-datasets-public/'
SPLITS = {
    'digits_only_train': (DIGIT_CLIENTS, 10),
    'digits_only_test': ({c: TEST_SIZES[c] for c in DIGIT_CLIENTS}, 10),
    'all_train': (ALL_CLIENTS, 62),
    'all_test': (TEST_SIZES, 62),
}


def encode_emnist_example(pixels: np.ndarray, label: int) -> bytes:
  return encode_example(
      {'pixels': ('float', pixels.reshape(-1).tolist()), 'label': ('int64', [int(label)])}
  )


# Fixture data in TFF's formats --------------------------------------------------------------------


def make_data(seed: int = 0) -> dict:
  """``{split: {client_id: {'label': int32[n], 'pixels': float32[n, 28, 28]}}}``."""
  rng = np.random.default_rng(seed)
  data = {}
  for split, (sizes, num_classes) in SPLITS.items():
    data[split] = {}
    for client, n in sizes.items():
      pixels = rng.random((n, 28, 28), dtype=np.float32)
      pixels[pixels > 0.6] = 1.0  # Mostly background (1.0), as in TFF's files.
      pixels[:, 0, 0] = 0.0
      label = rng.integers(0, num_classes, size=n).astype(np.int32)
      data[split][client] = {'label': label, 'pixels': pixels}
  return data


def write_tff_sqlite(path, data: dict, with_index: bool = True) -> None:
  """TFF SqlClientData's schema, rows of different clients interleaved."""
  rows = {
      split: {
          client: [
              encode_emnist_example(p, y) for p, y in zip(a['pixels'], a['label'], strict=True)
          ]
          for client, a in clients.items()
      }
      for split, clients in data.items()
  }
  write_sql_client_data(path, rows, with_index=with_index)


def write_tff_hdf5(path, clients: dict) -> None:
  h5py = pytest.importorskip('h5py')
  with h5py.File(path, 'w') as f:
    examples = f.create_group('examples')
    for client in reversed(list(clients)):
      group = examples.create_group(client)
      group.create_dataset('label', data=clients[client]['label'])
      group.create_dataset('pixels', data=clients[client]['pixels'])


def sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
  """No network, no real cache, small expected populations; shared handles closed afterwards."""

  def no_network(url, *args, **kwargs):
    pytest.fail(f'test tried to use the network: {url}')

  monkeypatch.setattr(download, '_open_url', no_network)
  monkeypatch.setattr('urllib.request.urlopen', no_network)
  monkeypatch.setenv('FEDJAX_LIKE_CACHE', str(tmp_path / 'env_cache'))
  monkeypatch.setattr(emnist, '_NUM_CLIENTS', {True: len(DIGIT_CLIENTS), False: len(ALL_CLIENTS)})
  yield
  handles.close_all()


@pytest.fixture(scope='module')
def data():
  return make_data()


@pytest.fixture(scope='module')
def sqlite_bytes(data, tmp_path_factory):
  path = tmp_path_factory.mktemp('build') / 'emnist_all.sqlite'
  write_tff_sqlite(path, data)
  return path.read_bytes()


@pytest.fixture(scope='module')
def lzma_bytes(sqlite_bytes):
  return lzma.compress(sqlite_bytes, format=lzma.FORMAT_ALONE)  # The '.lzma' container.


@pytest.fixture
def sqlite_release(monkeypatch, sqlite_bytes, lzma_bytes):
  """Points the module at our small 'published' file: its size and SHA-256."""
  release = download.Release(
      url=emnist._SQLITE.url,
      size=len(lzma_bytes),
      sha256=sha256(lzma_bytes),
      decompressed_size=len(sqlite_bytes),
  )
  monkeypatch.setattr(emnist, '_SQLITE', release)
  return release


@pytest.fixture(scope='module')
def tar_bytes(data, tmp_path_factory):
  pytest.importorskip('h5py')
  build = tmp_path_factory.mktemp('h5build')
  train, test = build / 'fed_emnist_digitsonly_train.h5', build / 'fed_emnist_digitsonly_test.h5'
  write_tff_hdf5(train, data['digits_only_train'])
  write_tff_hdf5(test, data['digits_only_test'])
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode='w:bz2') as archive:
    archive.add(train, arcname=train.name)
    archive.add(test, arcname=test.name)
  return buffer.getvalue()


@pytest.fixture
def hdf5_release(monkeypatch, tar_bytes):
  release = download.Release(url=emnist._HDF5[True].url, size=None, sha256=sha256(tar_bytes))
  monkeypatch.setitem(emnist._HDF5, True, release)
  return release


def assert_matches(client_data, expected: dict) -> None:
  """Same ids in sorted order, same sizes, same examples in order, exact values and dtypes."""
  assert client_data.client_ids == sorted(expected)
  assert client_data.client_sizes() == {c: len(a['label']) for c, a in expected.items()}
  for client, arrays in expected.items():
    elements = client_data.dataset_for_client(client).elements
    assert list(elements) == ['label', 'pixels']
    assert elements['pixels'].dtype == np.float32 and elements['label'].dtype == np.int32
    assert elements['pixels'].shape == (len(arrays['label']), 28, 28)
    assert elements['label'].shape == (len(arrays['label']),)
    np.testing.assert_array_equal(elements['pixels'], arrays['pixels'])
    np.testing.assert_array_equal(elements['label'], arrays['label'])


def listing(directory) -> list[str]:
  return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


# SQLite (TFF's current format) --------------------------------------------------------------------


@pytest.mark.parametrize('with_index', [True, False])
def test_sqlite_both_variants_match_tff(tmp_path, data, with_index):
  write_tff_sqlite(tmp_path / 'emnist_all.sqlite', data, with_index=with_index)
  train, test = emnist.load_data(only_digits=True, cache_dir=tmp_path, download=False)
  assert_matches(train, data['digits_only_train'])
  assert_matches(test, data['digits_only_test'])
  assert train.client_ids == ['F0001_00', 'f0000_14', 'f0100_07']
  train, test = emnist.load_data(only_digits=False, cache_dir=tmp_path, download=False)
  assert_matches(train, data['all_train'])
  assert_matches(test, data['all_test'])
  spec = train.element_spec
  assert (spec['pixels'].shape, spec['pixels'].dtype) == ((28, 28), np.float32)
  assert (spec['label'].shape, spec['label'].dtype) == ((), np.int32)


def test_sqlite_lzma_in_cache_is_decompressed_and_verified(
    tmp_path, data, lzma_bytes, sqlite_release
):
  (tmp_path / 'emnist_all.sqlite.lzma').write_bytes(lzma_bytes)
  assert emnist.available(cache_dir=tmp_path)
  train, _ = emnist.load_data(cache_dir=tmp_path, download=False)
  assert_matches(train, data['digits_only_train'])
  assert (tmp_path / 'emnist_all.sqlite').stat().st_size == sqlite_release.decompressed_size
  assert not [n for n in listing(tmp_path) if n.endswith('.partial')]


def test_works_without_tqdm(tmp_path, data, lzma_bytes, sqlite_release, monkeypatch):
  monkeypatch.setitem(sys.modules, 'tqdm', None)
  monkeypatch.setitem(sys.modules, 'tqdm.auto', None)
  (tmp_path / 'emnist_all.sqlite.lzma').write_bytes(lzma_bytes)
  train, _ = emnist.load_data(cache_dir=tmp_path, download=False)
  assert_matches(train, data['digits_only_train'])


def test_sqlite_lzma_with_wrong_checksum_is_rejected(tmp_path, lzma_bytes, monkeypatch):
  monkeypatch.setattr(emnist, '_SQLITE', download.Release(emnist._SQLITE.url, None, '0' * 64))
  (tmp_path / 'emnist_all.sqlite.lzma').write_bytes(lzma_bytes)
  with pytest.raises(emnist.CorruptDatasetError, match='SHA-256'):
    emnist.load_data(cache_dir=tmp_path, download=False)
  assert listing(tmp_path) == ['emnist_all.sqlite.lzma']


def test_truncated_lzma_in_cache_is_rejected(tmp_path, lzma_bytes, sqlite_release):
  (tmp_path / 'emnist_all.sqlite.lzma').write_bytes(lzma_bytes[: len(lzma_bytes) // 2])
  with pytest.raises(emnist.CorruptDatasetError) as info:
    emnist.load_data(cache_dir=tmp_path, download=False)
  assert str(tmp_path / 'emnist_all.sqlite.lzma') in str(info.value)
  assert listing(tmp_path) == ['emnist_all.sqlite.lzma']  # No final file, no temp file left.


def test_truncated_sqlite_is_not_taken_as_complete(tmp_path, sqlite_bytes):
  path = tmp_path / 'emnist_all.sqlite'
  path.write_bytes(sqlite_bytes[: len(sqlite_bytes) // 2])
  assert not emnist.available(cache_dir=tmp_path)
  with pytest.raises(emnist.CorruptDatasetError, match='truncated') as info:
    emnist.load_data(cache_dir=tmp_path, download=False)
  assert str(path) in str(info.value)


def test_leftover_partial_files_are_ignored(tmp_path, sqlite_bytes):
  (tmp_path / '.emnist_all.sqlite.k3j2h1.partial').write_bytes(sqlite_bytes)
  (tmp_path / '.fed_emnist_digitsonly_train.h5.x8.partial').write_bytes(b'\x89HDF')
  assert not emnist.available(cache_dir=tmp_path)
  with pytest.raises(DatasetNotFoundError):
    emnist.load_data(cache_dir=tmp_path, download=False)


def test_loading_is_lazy(tmp_path, data, monkeypatch):
  write_tff_sqlite(tmp_path / 'emnist_all.sqlite', data)
  calls = []
  parse = tf_example_batch.parse_examples
  monkeypatch.setattr(
      tf_example_batch, 'parse_examples', lambda b, *a: calls.append(len(b)) or parse(b, *a)
  )
  train, test = emnist.load_data(cache_dir=tmp_path, download=False)
  assert train.client_sizes()['f0100_07'] == 45 and len(test) == 3
  assert not calls  # Ids and sizes come from client_metadata; nothing decoded yet.
  train.dataset_for_client('f0000_14')
  assert calls == [7]


def test_one_connection_per_file_shared_by_splits_and_threads(tmp_path, data, monkeypatch):
  write_tff_sqlite(tmp_path / 'emnist_all.sqlite', data)
  connects = []
  connect = sqlite3.connect
  counting = lambda *a, **k: connects.append(a) or connect(*a, **k)
  monkeypatch.setattr(sqlite3, 'connect', counting)
  train, test = emnist.load_data(cache_dir=tmp_path, download=False)
  all_train, _ = emnist.load_data(only_digits=False, cache_dir=tmp_path, download=False)
  assert len(connects) == 1
  jobs = [(train, 'digits_only_train', c) for c in train.client_ids] * 8
  jobs += [(all_train, 'all_train', c) for c in all_train.client_ids] * 8
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    results = list(pool.map(lambda j: j[0].dataset_for_client(j[2]).elements, jobs))
  for (_, split, client), elements in zip(jobs, results, strict=True):
    np.testing.assert_array_equal(elements['pixels'], data[split][client]['pixels'])
    np.testing.assert_array_equal(elements['label'], data[split][client]['label'])
  assert len(connects) == 1


def test_client_data_pickles_without_its_handle(tmp_path, data):
  write_tff_sqlite(tmp_path / 'emnist_all.sqlite', data)
  write_tff_hdf5(tmp_path / 'fed_emnist_digitsonly_train.h5', data['digits_only_train'])
  write_tff_hdf5(tmp_path / 'fed_emnist_digitsonly_test.h5', data['digits_only_test'])
  from_sqlite, _ = emnist.load_data(cache_dir=tmp_path, download=False)
  (tmp_path / 'emnist_all.sqlite').rename(tmp_path / 'elsewhere.sqlite')
  from_hdf5, _ = emnist.load_data(cache_dir=tmp_path, download=False)
  (tmp_path / 'elsewhere.sqlite').rename(tmp_path / 'emnist_all.sqlite')
  for train in (from_sqlite, from_hdf5):
    copy = pickle.loads(pickle.dumps(train))
    assert copy.client_ids == train.client_ids
    np.testing.assert_array_equal(
        copy.dataset_for_client('f0000_14').elements['pixels'],
        data['digits_only_train']['f0000_14']['pixels'],
    )


def test_tff_batching_idiom(tmp_path, data):
  write_tff_sqlite(tmp_path / 'emnist_all.sqlite', data)
  train, _ = emnist.load_data(cache_dir=tmp_path, download=False)
  batched = (
      train.dataset_for_client('f0100_07')
      .map(lambda e: (e['pixels'].reshape(-1), e['label']))
      .batch(20)
  )
  x, y = batched.batches
  assert x.shape == (3, 20, 784) and x.dtype == np.float32
  assert y.shape == (3, 20) and y.dtype == np.int32
  assert batched.num_examples == 45 and batched.mask[-1].sum() == 5
  expected = data['digits_only_train']['f0100_07']
  np.testing.assert_array_equal(x.reshape(-1, 784)[:45], expected['pixels'].reshape(45, 784))
  np.testing.assert_array_equal(y.reshape(-1)[:45], expected['label'])


def test_sqlite_with_missing_feature_is_reported(tmp_path, data):
  path = tmp_path / 'emnist_all.sqlite'
  write_tff_sqlite(path, data)
  with sqlite3.connect(path) as con:
    con.execute(
        "UPDATE examples SET serialized_example_proto = ? WHERE rowid = ("
        "SELECT MIN(rowid) FROM examples WHERE client_id = 'F0001_00' "
        "AND split_name = 'digits_only_train')",
        (encode_example({'label': ('int64', [3])}),),
    )
  con.close()
  train, _ = emnist.load_data(cache_dir=tmp_path, download=False)
  with pytest.raises(emnist.CorruptDatasetError, match="'pixels'.*784") as info:
    train.dataset_for_client('F0001_00')
  assert "client 'F0001_00', example 0" in str(info.value)


# HDF5 (TFF's older format) ------------------------------------------------------------------------


def test_hdf5_files_in_cache(tmp_path, data):
  write_tff_hdf5(tmp_path / 'fed_emnist_digitsonly_train.h5', data['digits_only_train'])
  write_tff_hdf5(tmp_path / 'fed_emnist_digitsonly_test.h5', data['digits_only_test'])
  assert emnist.available(cache_dir=tmp_path)
  assert not emnist.available(only_digits=False, cache_dir=tmp_path)
  train, test = emnist.load_data(cache_dir=tmp_path, download=False)
  assert_matches(train, data['digits_only_train'])
  assert_matches(test, data['digits_only_test'])


def test_hdf5_tar_bz2_in_cache_is_verified_and_extracted(tmp_path, data, tar_bytes, hdf5_release):
  (tmp_path / 'fed_emnist_digitsonly.tar.bz2').write_bytes(tar_bytes)
  assert emnist.available(cache_dir=tmp_path)
  train, test = emnist.load_data(cache_dir=tmp_path, download=False)
  assert_matches(train, data['digits_only_train'])
  assert_matches(test, data['digits_only_test'])
  assert listing(tmp_path) == [
      'fed_emnist_digitsonly.tar.bz2',  # Placed by the user: kept.
      'fed_emnist_digitsonly_test.h5',
      'fed_emnist_digitsonly_train.h5',
  ]


def test_hdf5_tar_bz2_with_wrong_checksum_is_rejected(tmp_path, tar_bytes, monkeypatch):
  (tmp_path / 'fed_emnist_digitsonly.tar.bz2').write_bytes(tar_bytes)  # Real TFF hash expected.
  with pytest.raises(emnist.CorruptDatasetError, match='SHA-256'):
    emnist.load_data(cache_dir=tmp_path, download=False)
  assert listing(tmp_path) == ['fed_emnist_digitsonly.tar.bz2']


def test_sqlite_is_preferred_over_hdf5(tmp_path, data, monkeypatch):
  write_tff_sqlite(tmp_path / 'emnist_all.sqlite', data)
  (tmp_path / 'fed_emnist_digitsonly_train.h5').write_bytes(b'not read')
  (tmp_path / 'fed_emnist_digitsonly_test.h5').write_bytes(b'not read')
  train, _ = emnist.load_data(cache_dir=tmp_path, download=False)
  assert_matches(train, data['digits_only_train'])


def test_missing_h5py_names_the_extra(tmp_path, data, monkeypatch):
  write_tff_hdf5(tmp_path / 'fed_emnist_digitsonly_train.h5', data['digits_only_train'])
  write_tff_hdf5(tmp_path / 'fed_emnist_digitsonly_test.h5', data['digits_only_test'])
  monkeypatch.setitem(sys.modules, 'h5py', None)  # Makes `import h5py` raise ImportError.
  assert not emnist.available(cache_dir=tmp_path)
  with pytest.raises(ImportError, match=r"pip install 'fedjax_like\[emnist\]'"):
    emnist.load_data(cache_dir=tmp_path, download=False)


# Offline errors, cache location, downloads --------------------------------------------------------


def test_offline_error_names_paths_and_urls(tmp_path):
  with pytest.raises(DatasetNotFoundError) as info:
    emnist.load_data(cache_dir=tmp_path / 'cache', download=False)
  message = str(info.value)
  assert str(tmp_path / 'cache' / 'emnist_all.sqlite') in message
  assert f'{BASE_URL}emnist_all.sqlite.lzma' in message
  assert str(tmp_path / 'cache' / 'fed_emnist_digitsonly_train.h5') in message
  assert f'{BASE_URL}fed_emnist_digitsonly.tar.bz2' in message
  assert isinstance(info.value, OSError)
  assert not (tmp_path / 'cache').exists()  # Nothing created when not downloading.


def test_failed_download_raises_not_found_and_leaves_nothing(tmp_path, monkeypatch):
  def unreachable(url, start=0):
    raise urllib.error.URLError('Name or service not known')

  monkeypatch.setattr(download, '_open_url', unreachable)
  with pytest.raises(DatasetNotFoundError) as info:
    emnist.load_data(only_digits=False, cache_dir=tmp_path)
  assert str(tmp_path / 'emnist_all.sqlite') in str(info.value)
  assert 'Name or service not known' in str(info.value)
  assert str(tmp_path / 'fed_emnist.tar.bz2') in str(info.value)
  assert listing(tmp_path) == []


def test_default_cache_dir_follows_env(tmp_path, data):
  assert emnist.default_cache_dir() == str(tmp_path / 'env_cache' / 'emnist')
  os.makedirs(tmp_path / 'env_cache' / 'emnist')
  assert not emnist.available()
  write_tff_sqlite(tmp_path / 'env_cache' / 'emnist' / 'emnist_all.sqlite', data)
  assert emnist.available() and emnist.available(only_digits=False)
  train, _ = emnist.load_data(download=False)
  assert train.client_ids == sorted(DIGIT_CLIENTS)


class FakeResponse(io.BytesIO):
  """A urlopen() response serving ``data``; optionally the connection drops after ``cut`` bytes."""

  def __init__(self, data: bytes, length: int | None = None, cut: int | None = None):
    super().__init__(data)
    self.headers = {'Content-Length': str(len(data) if length is None else length)}
    self._cut = cut

  def read(self, size=-1):
    if self._cut is not None and self.tell() >= self._cut:
      raise ConnectionResetError('connection reset by peer')
    if self._cut is not None:
      size = min(size if size >= 0 else self._cut, self._cut - self.tell())
    return super().read(size)


def serve(monkeypatch, files: dict) -> list[str]:
  requested = []

  def open_url(url, start=0):
    requested.append(url)
    if url not in files:
      raise urllib.error.HTTPError(url, 404, 'Not Found', {}, None)
    return files[url]()

  monkeypatch.setattr(download, '_open_url', open_url)
  return requested


def test_download_sqlite(tmp_path, data, lzma_bytes, sqlite_release, monkeypatch):
  monkeypatch.setattr(download, '_CHUNK', 4096)  # Many chunks through the streaming decompressor.
  requested = serve(monkeypatch, {sqlite_release.url: lambda: FakeResponse(lzma_bytes)})
  cache = tmp_path / 'new' / 'cache'
  assert not emnist.available(cache_dir=cache)
  train, test = emnist.load_data(cache_dir=cache)
  assert requested == [sqlite_release.url]
  assert_matches(train, data['digits_only_train'])
  assert_matches(test, data['digits_only_test'])
  assert listing(cache) == ['emnist_all.sqlite']
  emnist.load_data(only_digits=False, cache_dir=cache)
  assert requested == [sqlite_release.url]  # Cached: no second download.


@pytest.mark.parametrize(
    'response, resumable',
    [
        pytest.param(lambda b: FakeResponse(b, cut=len(b) // 2), True, id='connection_dropped'),
        pytest.param(
            lambda b: FakeResponse(b[: len(b) // 2], length=len(b)), True, id='short_body'
        ),
        pytest.param(lambda b: FakeResponse(b[:-1] + bytes([b[-1] ^ 1])), False, id='corrupted'),
    ],
)
def test_bad_download_never_leaves_a_complete_looking_file(
    tmp_path, lzma_bytes, sqlite_release, monkeypatch, response, resumable
):
  monkeypatch.setattr(download, '_CHUNK', 4096)
  serve(monkeypatch, {sqlite_release.url: lambda: response(lzma_bytes)})
  with pytest.raises(DatasetNotFoundError) as info:
    emnist.load_data(cache_dir=tmp_path)
  assert str(tmp_path / 'emnist_all.sqlite') in str(info.value)
  # Nothing under a final name; an interrupted download keeps its bytes (hidden, to resume).
  assert listing(tmp_path) == (['.emnist_all.sqlite.lzma.partial'] if resumable else [])
  assert not emnist.available(cache_dir=tmp_path)


class RangeResponse(FakeResponse):
  """A server honouring ``Range: bytes=start-`` with a 206 answer."""

  def __init__(self, data: bytes, start: int):
    super().__init__(data[start:])
    self.status = 206 if start else 200
    if start:
      self.headers['Content-Range'] = f'bytes {start}-{len(data) - 1}/{len(data)}'


def test_interrupted_download_resumes_where_it_stopped(
    tmp_path, data, lzma_bytes, sqlite_release, monkeypatch
):
  monkeypatch.setattr(download, '_CHUNK', 4096)
  starts = []

  def open_url(url, start=0):
    if url != sqlite_release.url:
      raise urllib.error.HTTPError(url, 404, 'Not Found', {}, None)
    starts.append(start)
    if len(starts) == 1:
      return FakeResponse(lzma_bytes, cut=len(lzma_bytes) // 2)
    return RangeResponse(lzma_bytes, start)

  monkeypatch.setattr(download, '_open_url', open_url)
  with pytest.raises(DatasetNotFoundError, match='resume'):
    emnist.load_data(cache_dir=tmp_path)
  half = (tmp_path / '.emnist_all.sqlite.lzma.partial').stat().st_size
  assert 0 < half < len(lzma_bytes)
  train, _ = emnist.load_data(cache_dir=tmp_path)
  assert starts == [0, half]
  assert_matches(train, data['digits_only_train'])
  assert listing(tmp_path) == ['emnist_all.sqlite']


def test_download_with_wrong_client_count_is_rejected(
    tmp_path, lzma_bytes, sqlite_release, monkeypatch
):
  monkeypatch.setattr(emnist, '_NUM_CLIENTS', {True: 3383, False: 3400})
  serve(monkeypatch, {sqlite_release.url: lambda: FakeResponse(lzma_bytes)})
  with pytest.raises(DatasetNotFoundError, match='3383'):
    emnist.load_data(cache_dir=tmp_path)
  assert listing(tmp_path) == []


def test_download_falls_back_to_hdf5(tmp_path, data, tar_bytes, hdf5_release, monkeypatch):
  requested = serve(monkeypatch, {hdf5_release.url: lambda: FakeResponse(tar_bytes)})
  train, test = emnist.load_data(cache_dir=tmp_path)
  assert requested == [emnist._SQLITE.url, hdf5_release.url]
  assert_matches(train, data['digits_only_train'])
  assert_matches(test, data['digits_only_test'])
  # The downloaded archive is removed once extracted and verified.
  assert listing(tmp_path) == ['fed_emnist_digitsonly_test.h5', 'fed_emnist_digitsonly_train.h5']
