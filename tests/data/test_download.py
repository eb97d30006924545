"""Tests for the download module: resumable verified fetches, atomic decompression, offline errors.

The network entry point ``download._open_url`` is always replaced: by a function failing the test,
or by a fake server of local bytes that can drop the connection and honour ``Range`` requests.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import threading
import urllib.error

import pytest

from fedjax_like.data.sources import CorruptDatasetError, DatasetNotFoundError, download

URL = download.BASE_URL + 'thing.sqlite.lzma'
PAYLOAD = bytes(range(256)) * 400  # Stands in for a decompressed database.
COMPRESSED = lzma.compress(PAYLOAD, format=lzma.FORMAT_ALONE)


class Response(io.BytesIO):
  """A urlopen() response: ``data`` from byte ``start`` (206 if > 0), dropping after ``cut``."""

  def __init__(self, data: bytes, start: int = 0, cut: int | None = None, honour_range=True):
    start = start if honour_range else 0
    super().__init__(data[start:])
    self.status = 206 if start else 200
    self.headers = {'Content-Length': str(len(data) - start)}
    if start:
      self.headers['Content-Range'] = f'bytes {start}-{len(data) - 1}/{len(data)}'
    self._cut = None if cut is None else cut - start

  def read(self, size=-1):
    if self._cut is not None and self.tell() >= self._cut:
      raise ConnectionResetError('connection reset by peer')
    if self._cut is not None:
      size = min(size if size >= 0 else self._cut, self._cut - self.tell())
    return super().read(size)


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
  def no_network(url, start=0):
    pytest.fail(f'test tried to use the network: {url}')

  monkeypatch.setattr(download, '_open_url', no_network)
  monkeypatch.setattr(download, '_CHUNK', 1024)
  monkeypatch.setenv('FEDJAX_LIKE_CACHE', str(tmp_path / 'env_cache'))


def serve(monkeypatch, respond) -> list[int]:
  """Serves ``respond(start)`` for URL; returns the list of requested start offsets."""
  starts = []

  def open_url(url, start=0):
    assert url == URL
    starts.append(start)
    return respond(start)

  monkeypatch.setattr(download, '_open_url', open_url)
  return starts


def release(**kwargs) -> download.Release:
  known = dict(size=len(COMPRESSED), sha256=hashlib.sha256(COMPRESSED).hexdigest())
  return download.Release(URL, **{**known, **kwargs})


def listing(directory) -> list[str]:
  return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def test_cache_dir_defaults_and_release_filename(tmp_path):
  assert download.default_cache_dir('x') == str(tmp_path / 'env_cache' / 'x')
  assert download.resolve_cache_dir(tmp_path / 'c', 'x') == str(tmp_path / 'c')
  assert release().filename == 'thing.sqlite.lzma'


def test_fetch_writes_the_verified_file(tmp_path, monkeypatch):
  starts = serve(monkeypatch, lambda start: Response(COMPRESSED, start))
  download.fetch(release(), str(tmp_path / 'thing.sqlite.lzma'))
  assert (tmp_path / 'thing.sqlite.lzma').read_bytes() == COMPRESSED
  assert starts == [0] and listing(tmp_path) == ['thing.sqlite.lzma']
  download.fetch(release(), str(tmp_path / 'thing.sqlite.lzma'))  # Already there: no request.
  assert starts == [0]


@pytest.mark.parametrize('known', [True, False], ids=['known_size', 'unknown_size'])
def test_interrupted_fetch_keeps_its_bytes_and_resumes(tmp_path, monkeypatch, known):
  cut = len(COMPRESSED) // 3
  responses = iter([lambda s: Response(COMPRESSED, s, cut=cut), lambda s: Response(COMPRESSED, s)])
  starts = serve(monkeypatch, lambda start: next(responses)(start))
  dest = str(tmp_path / 'thing.sqlite.lzma')
  rel = release() if known else download.Release(URL)
  with pytest.raises(download.DownloadInterruptedError, match='resume') as info:
    download.fetch(rel, dest)
  assert isinstance(info.value, DatasetNotFoundError)
  assert listing(tmp_path) == ['.thing.sqlite.lzma.partial']
  assert (tmp_path / '.thing.sqlite.lzma.partial').read_bytes() == COMPRESSED[:cut]
  download.fetch(rel, dest)
  assert starts == [0, cut]
  assert (tmp_path / 'thing.sqlite.lzma').read_bytes() == COMPRESSED
  assert listing(tmp_path) == ['thing.sqlite.lzma']


def test_server_ignoring_the_range_starts_over(tmp_path, monkeypatch):
  (tmp_path / '.thing.sqlite.lzma.partial').write_bytes(b'stale bytes')
  starts = serve(monkeypatch, lambda start: Response(COMPRESSED, start, honour_range=False))
  download.fetch(release(), str(tmp_path / 'thing.sqlite.lzma'))
  assert starts == [len(b'stale bytes')]
  assert (tmp_path / 'thing.sqlite.lzma').read_bytes() == COMPRESSED


def test_complete_partial_answered_416_is_verified_and_kept(tmp_path, monkeypatch):
  (tmp_path / '.thing.sqlite.lzma.partial').write_bytes(COMPRESSED)

  def respond(start):
    raise urllib.error.HTTPError(URL, 416, 'Range Not Satisfiable', {}, None)

  serve(monkeypatch, respond)
  download.fetch(release(), str(tmp_path / 'thing.sqlite.lzma'))
  assert listing(tmp_path) == ['thing.sqlite.lzma']


@pytest.mark.parametrize(
    'served, message',
    [
        (COMPRESSED[:-1] + bytes([COMPRESSED[-1] ^ 1]), 'SHA-256'),
        (COMPRESSED + b'x', 'bytes; the published'),
    ],
    ids=['corrupted', 'too_long'],
)
def test_damaged_download_is_deleted(tmp_path, monkeypatch, served, message):
  serve(monkeypatch, lambda start: Response(served, start))
  with pytest.raises(CorruptDatasetError, match=message) as info:
    download.fetch(release(), str(tmp_path / 'thing.sqlite.lzma'))
  assert 'was deleted' in str(info.value)
  assert listing(tmp_path) == []


def test_decompress_lzma_is_all_or_nothing(tmp_path):
  source = tmp_path / 'thing.sqlite.lzma'
  dest = str(tmp_path / 'thing.sqlite')
  source.write_bytes(COMPRESSED[: len(COMPRESSED) // 2])
  with pytest.raises(CorruptDatasetError, match='truncated'):
    download.decompress_lzma(str(source), dest)
  source.write_bytes(b'not lzma at all')
  with pytest.raises(CorruptDatasetError, match='not valid LZMA'):
    download.decompress_lzma(str(source), dest)
  source.write_bytes(COMPRESSED)
  with pytest.raises(CorruptDatasetError, match='decompresses to'):
    download.decompress_lzma(str(source), dest, release(decompressed_size=len(PAYLOAD) + 1))

  def reject(path):
    assert open(path, 'rb').read() == PAYLOAD
    raise CorruptDatasetError('wrong client count')

  with pytest.raises(CorruptDatasetError, match='wrong client count'):
    download.decompress_lzma(str(source), dest, release(), verify=reject)
  assert listing(tmp_path) == ['thing.sqlite.lzma']
  download.decompress_lzma(str(source), dest, release(decompressed_size=len(PAYLOAD)))
  assert open(dest, 'rb').read() == PAYLOAD


def test_get_compressed_file_prefers_the_cache_then_a_placed_file(tmp_path):
  (tmp_path / 'thing.sqlite.lzma').write_bytes(COMPRESSED)
  path = download.get_compressed_file(release(), str(tmp_path), download=False)
  assert path == str(tmp_path / 'thing.sqlite') and open(path, 'rb').read() == PAYLOAD
  assert listing(tmp_path) == ['thing.sqlite', 'thing.sqlite.lzma']  # The placed file is kept.
  os.remove(tmp_path / 'thing.sqlite.lzma')
  assert download.get_compressed_file(release(), str(tmp_path), download=False) == path


def test_get_compressed_file_with_a_damaged_placed_file_says_so_and_keeps_it(tmp_path):
  (tmp_path / 'thing.sqlite.lzma').write_bytes(COMPRESSED[:100])
  with pytest.raises(CorruptDatasetError, match=f'Delete it, or replace it with {URL}'):
    download.get_compressed_file(release(), str(tmp_path), download=False)
  assert listing(tmp_path) == ['thing.sqlite.lzma']


def test_get_compressed_file_downloads_decompresses_and_removes_the_archive(tmp_path, monkeypatch):
  serve(monkeypatch, lambda start: Response(COMPRESSED, start))
  checked = []
  path = download.get_compressed_file(
      release(), str(tmp_path / 'new'), verify=checked.append, what='Thing', name='thing'
  )
  assert open(path, 'rb').read() == PAYLOAD and len(checked) == 1
  assert listing(tmp_path / 'new') == ['thing.sqlite']


def test_offline_error_names_the_file_the_path_and_the_url(tmp_path):
  with pytest.raises(DatasetNotFoundError) as info:
    download.get_compressed_file(
        release(), str(tmp_path / 'c'), download=False, what='Thing', name='thing'
    )
  message = str(info.value)
  assert 'download=False' in message and 'Thing' in message
  assert f'Missing file: {tmp_path / "c" / "thing.sqlite"}' in message
  assert URL in message and str(tmp_path / 'c' / 'thing.sqlite.lzma') in message
  assert '$FEDJAX_LIKE_CACHE/thing' in message
  assert not (tmp_path / 'c').exists()


def test_failed_download_is_a_not_found_error_naming_the_file(tmp_path, monkeypatch):
  def unreachable(url, start=0):
    raise urllib.error.URLError('Name or service not known')

  monkeypatch.setattr(download, '_open_url', unreachable)
  with pytest.raises(DatasetNotFoundError, match='Name or service not known') as info:
    download.get_compressed_file(release(), str(tmp_path))
  assert str(tmp_path / 'thing.sqlite') in str(info.value)
  assert listing(tmp_path) == []


def test_works_without_tqdm(tmp_path, monkeypatch):
  monkeypatch.setitem(__import__('sys').modules, 'tqdm', None)
  monkeypatch.setitem(__import__('sys').modules, 'tqdm.auto', None)
  serve(monkeypatch, lambda start: Response(COMPRESSED, start))
  assert open(download.get_compressed_file(release(), str(tmp_path)), 'rb').read() == PAYLOAD


def test_directory_lock_is_reentrant_and_excludes_other_threads(tmp_path):
  order = []

  def other_thread():
    with download.directory_lock(str(tmp_path)):
      order.append('thread')

  with download.directory_lock(str(tmp_path)):
    with download.directory_lock(str(tmp_path)):  # Re-entrant: no self-deadlock.
      worker = threading.Thread(target=other_thread)
      worker.start()
      worker.join(0.2)
      order.append('main')
  worker.join(5)
  assert order == ['main', 'thread']
