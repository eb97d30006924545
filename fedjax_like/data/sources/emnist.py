"""Federated EMNIST exactly as TensorFlow Federated serves it, read without TensorFlow.

``load_data(only_digits=True)`` returns ``(train, test)`` :class:`ClientData` matching
``tff.simulation.datasets.emnist.load_data``: the same client ids in the same order (sorted, as
TFF sorts them), each client's examples in the same order, each example
``{'label': int32[], 'pixels': float32[28, 28]}``. Pixels are served as stored: values in [0, 1]
with 1.0 for the background and 0.0 for the ink (the inverse of MNIST; nothing here flips or
rescales them). Digits only: 3,383 writers, 10 classes; all characters: 3,400 writers, 62 classes.

Two published file formats are read, whichever is in the cache:

* SQLite, what TFF's loader has used since February 2021 (``tensorflow_federated/python/simulation/
  datasets/emnist.py`` and ``sql_client_data.py``): one database ``emnist_all.sqlite`` for both
  variants, published LZMA-compressed at ``_SQLITE_URL``. Table ``examples(split_name TEXT,
  client_id TEXT, serialized_example_proto BLOB)`` holds one serialized ``tf.train.Example`` per row
  with features ``pixels`` (float_list, 784 values, row-major 28x28) and ``label`` (int64_list, one
  value); table ``client_metadata(client_id TEXT, split_name TEXT, num_examples INTEGER)`` lists the
  clients of each split. Splits: ``digits_only_train``, ``digits_only_test``, ``all_train``,
  ``all_test``. The protos are decoded by :func:`parse_example`, a small protobuf wire-format
  reader.
* HDF5, what TFF's loader used before (and FedJAX 0.0.x through it):
  ``fed_emnist_digitsonly.tar.bz2`` (or ``fed_emnist.tar.bz2``) holding ``<prefix>_train.h5`` and
  ``<prefix>_test.h5``, each with groups ``examples/<client_id>/{label, pixels}``. Needs ``h5py``
  (``pip install 'fedjax_like[emnist]'``).

Files live in ``cache_dir``, by default ``$FEDJAX_LIKE_CACHE/emnist`` or else
``~/.cache/fedjax_like/emnist``. On first use the SQLite release is downloaded (the HDF5 one if that
fails), checked (size and SHA-256 of what was downloaded, then its structure and client counts)
and written atomically: a temporary file in the same directory, fsynced, then renamed, so a file
under its final name is always complete and a killed download leaves only an ignored
``.*.partial`` file. A file placed by hand works too: put ``emnist_all.sqlite`` (or
``emnist_all.sqlite.lzma``), or the two ``.h5`` files (or the ``.tar.bz2``), in the cache directory.

Loading is lazy: building the ClientData reads only client ids and sizes (``client_metadata``, or
the HDF5 group listing and dataset shapes); a client's examples are read and decoded when its
dataset is asked for. Each file is opened once per process and shared by every ClientData that
reads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import logging
import lzma
import os
import sqlite3
import tarfile
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import IO, Any

import numpy as np

from fedjax_like.data.client_data import ClientData
from fedjax_like.data.sources import DatasetNotFoundError

_log = logging.getLogger(__name__)

_INSTALL_HINT = "pip install 'fedjax_like[emnist]'"
_BASE_URL = 'https://storage.googleapis.com/tff-datasets-public/'
_CHUNK = 1 << 20


class CorruptDatasetError(DatasetNotFoundError):
  """A cached or downloaded EMNIST file is incomplete, damaged or not the published release."""


@dataclasses.dataclass(frozen=True)
class _Release:
  """One file as TFF publishes it, and what a correct download of it looks like."""

  url: str
  size: int | None  # Bytes served (compressed); None where unknown.
  sha256: str | None  # Of the bytes served; None where unknown.
  decompressed_size: int | None = None

  @property
  def filename(self) -> str:
    return self.url.rsplit('/', 1)[-1]


# TFF's current loader (tensorflow_federated/python/simulation/datasets/emnist.py, since 2021-02).
# TFF publishes no checksum for it: size and SHA-256 are those a third-party provenance manifest
# records for this exact URL (its download script pins the same values; another project records the
# size as ~170.5 MB). A mismatch fails the download, which then falls back to the HDF5 release.
_SQLITE_FILE = 'emnist_all.sqlite'
_SQLITE = _Release(
    url=_BASE_URL + 'emnist_all.sqlite.lzma',
    size=170_507_172,
    sha256='c3aaf91b4cf4e69d53d81627ad119eccdc878ff906f68e66063ff10f67faad48',
    decompressed_size=4_708_990_976,
)
_SQLITE_SPLITS = {True: ('digits_only_train', 'digits_only_test'), False: ('all_train', 'all_test')}

# TFF's loader before 2021-02 (same file, commit 7bb20162f^): SHA-256s published by TFF itself.
_HDF5_PREFIX = {True: 'fed_emnist_digitsonly', False: 'fed_emnist'}
_HDF5 = {
    True: _Release(
        url=_BASE_URL + 'fed_emnist_digitsonly.tar.bz2',
        size=None,
        sha256='55333deb8546765427c385710ca5e7301e16f4ed8b60c1dc5ae224b42bd5b14b',
    ),
    False: _Release(
        url=_BASE_URL + 'fed_emnist.tar.bz2',
        size=None,
        sha256='fe1ed5a502cea3a952eb105920bff8cffb32836b5173cb18a57a32c3606f3ea0',
    ),
}

# Clients per split (train and test have the same writers), as TFF documents and tests.
_NUM_CLIENTS = {True: 3383, False: 3400}

_PIXELS_SHAPE = (28, 28)


# Public API -------------------------------------------------------------------------------------


def default_cache_dir() -> str:
  """``$FEDJAX_LIKE_CACHE/emnist`` if that variable is set, else ``~/.cache/fedjax_like/emnist``."""
  root = os.environ.get('FEDJAX_LIKE_CACHE') or os.path.join('~', '.cache', 'fedjax_like')
  return os.path.abspath(os.path.join(os.path.expanduser(root), 'emnist'))


def load_data(
    only_digits: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> tuple[ClientData, ClientData]:
  """Federated EMNIST ``(train, test)``, as ``tff.simulation.datasets.emnist.load_data`` serves it.

  Args:
    only_digits: True for the 10 digit classes (3,383 clients); False for all 62 classes of digits
      and upper- and lower-case letters (3,400 clients; labels 10-35 are 'A'-'Z', 36-61 'a'-'z').
    cache_dir: where the files are (or go); defaults to :func:`default_cache_dir`.
    download: fetch the data when it is not cached. With False, a missing file raises at once.

  Returns:
    ``(train, test)`` ClientData with the same client ids; each example is
    ``{'label': int32 scalar, 'pixels': float32 [28, 28]}`` (1.0 = background).

  Raises:
    DatasetNotFoundError: the data is not cached and could not be downloaded; the message names
      the files, the full paths to put them at and the URLs to fetch them from.
    CorruptDatasetError: a cached file is truncated, damaged or not the published release.
    ImportError: only HDF5 files are available and h5py is not installed.
  """
  only_digits = bool(only_digits)
  paths = _Paths(_resolve_cache_dir(cache_dir), only_digits)
  if _ensure_local(paths, download) == 'sqlite':
    reader = _open_reader(_SqliteReader, paths.sqlite)
    train_split, test_split = _SQLITE_SPLITS[only_digits]
    return reader.client_data(train_split), reader.client_data(test_split)
  train = _open_reader(_Hdf5Reader, paths.h5_train).client_data()
  test = _open_reader(_Hdf5Reader, paths.h5_test).client_data()
  return train, test


def available(only_digits: bool = True, cache_dir: str | os.PathLike[str] | None = None) -> bool:
  """Whether :func:`load_data` would find the data locally (no network), checked cheaply.

  True when a complete ``emnist_all.sqlite`` (or its ``.lzma``) is in the cache, or, with h5py
  installed, both ``.h5`` files of this variant (or their ``.tar.bz2``). Leftover partial downloads
  do not count. Files are not decoded, so a damaged archive can still fail in ``load_data``.
  """
  paths = _Paths(_resolve_cache_dir(cache_dir), bool(only_digits))
  if os.path.isfile(paths.sqlite) and _sqlite_file_problem(paths.sqlite) is None:
    return True
  if os.path.isfile(paths.sqlite_lzma):
    return True
  hdf5 = (os.path.isfile(paths.h5_train) and os.path.isfile(paths.h5_test)) or os.path.isfile(
      paths.tar
  )
  return hdf5 and importlib.util.find_spec('h5py') is not None


# tf.train.Example decoding ----------------------------------------------------------------------


class ProtoDecodeError(ValueError):
  """The bytes are not a well-formed serialized protocol buffer of the expected message."""


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
  result = 0
  shift = 0
  while pos < end:
    byte = buf[pos]
    pos += 1
    result |= (byte & 0x7F) << shift
    if byte < 0x80:
      return result, pos
    shift += 7
    if shift >= 70:
      raise ProtoDecodeError('varint longer than 10 bytes')
  raise ProtoDecodeError('truncated varint')


def _fields(buf: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
  """Yields ``(field, wire_type, a, b)``: a varint's value in ``a``, else the ``buf[a:b]`` span."""
  while pos < end:
    key, pos = _read_varint(buf, pos, end)
    field, wire = key >> 3, key & 7
    if field == 0:
      raise ProtoDecodeError('field number 0')
    if wire == 0:
      value, pos = _read_varint(buf, pos, end)
      yield field, wire, value, pos
      continue
    if wire == 1:
      size = 8
    elif wire == 5:
      size = 4
    elif wire == 2:
      size, pos = _read_varint(buf, pos, end)
    else:
      raise ProtoDecodeError(f'unsupported wire type {wire} (field {field})')
    if pos + size > end:
      raise ProtoDecodeError(f'field {field} runs past the end of its message')
    yield field, wire, pos, pos + size
    pos += size


def _to_int64(value: int) -> int:
  value &= (1 << 64) - 1
  return value - (1 << 64) if value >= 1 << 63 else value


def _parse_float_list(buf: bytes, start: int, end: int, parts: list[np.ndarray]) -> None:
  for field, wire, a, b in _fields(buf, start, end):
    if field != 1:
      continue
    if wire == 2:  # Packed (what TF writes: FloatList.value is [packed = true]).
      if (b - a) % 4:
        raise ProtoDecodeError('packed float list length is not a multiple of 4')
      parts.append(np.frombuffer(buf, dtype='<f4', count=(b - a) // 4, offset=a))
    elif wire == 5:
      parts.append(np.frombuffer(buf, dtype='<f4', count=1, offset=a))
    else:
      raise ProtoDecodeError(f'FloatList.value with wire type {wire}')


def _parse_int64_list(buf: bytes, start: int, end: int, values: list[int]) -> None:
  for field, wire, a, b in _fields(buf, start, end):
    if field != 1:
      continue
    if wire == 2:  # Packed.
      pos = a
      while pos < b:
        value, pos = _read_varint(buf, pos, b)
        values.append(_to_int64(value))
    elif wire == 0:
      values.append(_to_int64(a))
    else:
      raise ProtoDecodeError(f'Int64List.value with wire type {wire}')


def _parse_bytes_list(buf: bytes, start: int, end: int, values: list[bytes]) -> None:
  for field, wire, a, b in _fields(buf, start, end):
    if field != 1:
      continue
    if wire != 2:
      raise ProtoDecodeError(f'BytesList.value with wire type {wire}')
    values.append(bytes(buf[a:b]))


_KINDS = {1: 'bytes_list', 2: 'float_list', 3: 'int64_list'}


def _parse_feature(buf: bytes, start: int, end: int) -> tuple[str | None, list[Any]]:
  """A Feature: its oneof kind (None when unset) and the values gathered so far."""
  kind: str | None = None
  values: list[Any] = []
  for field, wire, a, b in _fields(buf, start, end):
    if field not in _KINDS:
      continue
    if wire != 2:
      raise ProtoDecodeError(f'Feature field {field} with wire type {wire}')
    if _KINDS[field] != kind:  # A new oneof member replaces the previous one; a repeat merges.
      kind, values = _KINDS[field], []
    if field == 1:
      _parse_bytes_list(buf, a, b, values)
    elif field == 2:
      _parse_float_list(buf, a, b, values)
    else:
      _parse_int64_list(buf, a, b, values)
  return kind, values


def _finish_feature(kind: str | None, values: list[Any]) -> np.ndarray | list[bytes] | None:
  if kind == 'float_list':
    return np.concatenate(values) if len(values) != 1 else values[0].copy()
  if kind == 'int64_list':
    return np.asarray(values, dtype=np.int64)
  if kind == 'bytes_list':
    return values
  return None


def parse_example(serialized: bytes | bytearray | memoryview) -> dict[str, Any]:
  """Decodes a serialized ``tf.train.Example`` without TensorFlow.

  Follows ``tensorflow/core/example/{example,feature}.proto``: ``Example{features = 1: Features}``,
  ``Features{map<string, Feature> feature = 1}``, ``Feature{oneof: bytes_list = 1, float_list = 2,
  int64_list = 3}``, each list ``{repeated value = 1}`` (packed or not). Unknown fields are skipped
  and repeated occurrences merge as protobuf merges them.

  Returns:
    ``{name: value}`` where value is a float32 array (float_list), an int64 array (int64_list), a
    list of ``bytes`` (bytes_list), or None for a Feature with no kind set.

  Raises:
    ProtoDecodeError: the bytes are not a well-formed Example.
  """
  buf = bytes(serialized)
  raw: dict[str, tuple[str | None, list[Any]]] = {}
  for field, wire, a, b in _fields(buf, 0, len(buf)):
    if field != 1:
      continue
    if wire != 2:
      raise ProtoDecodeError(f'Example.features with wire type {wire}')
    for f_field, f_wire, fa, fb in _fields(buf, a, b):
      if f_field != 1:
        continue
      if f_wire != 2:
        raise ProtoDecodeError(f'Features.feature with wire type {f_wire}')
      key, feature = '', (None, [])
      for e_field, e_wire, ea, eb in _fields(buf, fa, fb):
        if e_field == 1 and e_wire == 2:
          try:
            key = buf[ea:eb].decode('utf-8')
          except UnicodeDecodeError as e:
            raise ProtoDecodeError('feature name is not UTF-8') from e
        elif e_field == 2 and e_wire == 2:
          feature = _parse_feature(buf, ea, eb)
      raw[key] = feature  # Map semantics: a later entry with the same key wins.
  return {key: _finish_feature(kind, values) for key, (kind, values) in raw.items()}


def _fixed_feature(
    features: dict[str, Any], name: str, dtype: type, count: int, where: Callable[[], str]
) -> np.ndarray:
  """``tf.io.FixedLenFeature``'s check: present, of the right kind, exactly ``count`` values."""
  value = features.get(name)
  if isinstance(value, np.ndarray) and value.dtype == dtype and value.size == count:
    return value
  if value is None:
    got = 'nothing (missing or empty feature)'
  elif isinstance(value, np.ndarray):
    got = f'{value.size} {value.dtype.name} values'
  else:
    got = f'a bytes_list of {len(value)} values'
  raise CorruptDatasetError(
      f'{where()}: feature {name!r} should hold {count} {np.dtype(dtype).name} values; got {got}.'
  )


def _decode_examples(blobs: list[bytes], where: Callable[[int], str]) -> dict[str, np.ndarray]:
  n = len(blobs)
  pixels = np.empty((n,) + _PIXELS_SHAPE, dtype=np.float32)
  labels = np.empty((n,), dtype=np.int32)
  count = _PIXELS_SHAPE[0] * _PIXELS_SHAPE[1]
  for i, blob in enumerate(blobs):
    try:
      features = parse_example(blob)
    except ProtoDecodeError as e:
      raise CorruptDatasetError(f'{where(i)}: not a valid tf.train.Example ({e}).') from e
    at = functools.partial(where, i)
    pixels[i] = _fixed_feature(features, 'pixels', np.float32, count, at).reshape(_PIXELS_SHAPE)
    # TFF parses label as int64 and casts it to int32.
    labels[i] = _fixed_feature(features, 'label', np.int64, 1, at)[0].astype(np.int32)
  return {'label': labels, 'pixels': pixels}


# Readers: one open handle per file --------------------------------------------------------------


def _sqlite_file_problem(path: str) -> str | None:
  """Why ``path`` is not a complete SQLite database, judged from its header; None if whole."""
  try:
    size = os.path.getsize(path)
    with open(path, 'rb') as f:
      header = f.read(100)
  except OSError as e:
    return f'it cannot be read ({e})'
  if size == 0:
    return 'it is empty'
  if len(header) < 100 or not header.startswith(b'SQLite format 3\x00'):
    return 'it is not an SQLite database'
  page_size = int.from_bytes(header[16:18], 'big')
  page_size = 65536 if page_size == 1 else page_size
  num_pages = int.from_bytes(header[28:32], 'big')
  # The in-header page count is valid when "version-valid-for" equals the change counter.
  if num_pages and header[92:96] == header[24:28] and size < page_size * num_pages:
    return f'it is truncated ({size} of {page_size * num_pages} bytes)'
  return None


def _has_client_index(conn: sqlite3.Connection) -> bool:
  """Whether an index lets ``WHERE client_id = ? AND split_name = ?`` avoid a full scan."""
  for row in conn.execute("PRAGMA index_list('examples')"):
    columns = [r[2] for r in conn.execute(f"PRAGMA index_info('{row[1]}')")]
    if columns[:1] == ['client_id'] or set(columns[:2]) == {'client_id', 'split_name'}:
      return True
  return False


class _SqliteReader:
  """TFF's ``SqlClientData`` layout: one read-only connection shared by every split and thread."""

  def __init__(self, path: str):
    self.path = path
    problem = _sqlite_file_problem(path)
    if problem:
      raise CorruptDatasetError(
          f'{path} is not a usable copy of {_SQLITE_FILE}: {problem}. Delete it and load again to '
          f'download it afresh, or replace it with the decompressed {_SQLITE.url}.'
      )
    self._lock = threading.Lock()
    uri = 'file:' + urllib.parse.quote(os.path.abspath(path)) + '?mode=ro'
    self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    try:
      query = "SELECT name FROM sqlite_master WHERE type='table'"
      missing = {'examples', 'client_metadata'} - {r[0] for r in self._conn.execute(query)}
      if missing:
        raise CorruptDatasetError(f'{path} lacks the TFF SqlClientData tables {sorted(missing)}.')
      for table, needed in (
          ('examples', {'split_name', 'client_id', 'serialized_example_proto'}),
          ('client_metadata', {'split_name', 'client_id', 'num_examples'}),
      ):
        columns = {r[1] for r in self._conn.execute(f"PRAGMA table_info('{table}')")}
        if needed - columns:
          missing = sorted(needed - columns)
          raise CorruptDatasetError(f'{path}: table {table} lacks the columns {missing}.')
      self._indexed = _has_client_index(self._conn)
    except sqlite3.DatabaseError as e:
      self._conn.close()
      raise CorruptDatasetError(f'{path} is a damaged SQLite database ({e}); delete it.') from e
    except BaseException:
      self._conn.close()
      raise
    self._rowids: dict[str, dict[str, list[int]]] = {}

  def close(self) -> None:
    with self._lock:
      self._conn.close()

  def __reduce__(self) -> tuple:
    # Pickled (e.g. to a worker process) as its path; the unpickler opens its own shared handle.
    return _open_reader, (type(self), self.path)

  def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
    try:
      with self._lock:
        return self._conn.execute(sql, args).fetchall()
    except sqlite3.DatabaseError as e:
      message = f'{self.path} is a damaged SQLite database ({e}); delete it.'
      raise CorruptDatasetError(message) from e

  def clients(self, split: str) -> tuple[list[str], dict[str, int]]:
    """Client ids sorted as TFF sorts them, and their example counts, from ``client_metadata``."""
    rows = self._query(
        'SELECT client_id, SUM(num_examples) FROM client_metadata WHERE split_name = ? '
        'GROUP BY client_id',
        (split,),
    )
    if not rows:
      raise CorruptDatasetError(f'{self.path} has no clients in split {split!r}.')
    sizes = {str(client): int(n) for client, n in rows}
    return sorted(sizes), sizes

  def _rowid_index(self, split: str) -> dict[str, list[int]]:
    """Without an index on client_id: one scan maps each client to its rows (in table order)."""
    with self._lock:
      index = self._rowids.get(split)
    if index is None:
      _log.info('%s has no index on client_id; scanning it once for split %s.', self.path, split)
      index = {}
      for rowid, client in self._query(
          'SELECT rowid, client_id FROM examples WHERE split_name = ?', (split,)
      ):
        index.setdefault(str(client), []).append(rowid)
      with self._lock:
        self._rowids[split] = index
    return index

  def load(self, split: str, client_id: str) -> dict[str, np.ndarray]:
    if self._indexed:
      # TFF's query, verbatim but for the bound parameters, so rows come back in TFF's order.
      rows = self._query(
          'SELECT serialized_example_proto FROM examples WHERE client_id = ? and split_name = ?',
          (client_id, split),
      )
    else:
      rows = []
      query = 'SELECT serialized_example_proto FROM examples WHERE rowid = ?'
      for rowid in self._rowid_index(split).get(client_id, []):
        rows += self._query(query, (rowid,))
    return _decode_examples(
        [r[0] for r in rows],
        lambda i: f'{self.path}, split {split!r}, client {client_id!r}, example {i}',
    )

  def client_data(self, split: str) -> ClientData:
    client_ids, sizes = self.clients(split)
    return ClientData.from_loader(client_ids, functools.partial(self.load, split), sizes=sizes)


def _import_h5py() -> Any:
  try:
    import h5py  # Optional dependency, imported only when HDF5 files are read.
  except ImportError as e:
    raise ImportError(
        f'Reading the HDF5 EMNIST files needs h5py, which is not installed: {_INSTALL_HINT} '
        f'(or place {_SQLITE_FILE} in the cache directory, which needs no extra package).'
    ) from e
  return h5py


class _Hdf5Reader:
  """TFF's old ``HDF5ClientData`` layout, ``examples/<client_id>/{label, pixels}``; one handle."""

  def __init__(self, path: str):
    h5py = _import_h5py()
    self.path = path
    self._lock = threading.Lock()
    try:
      self._file = h5py.File(path, 'r')
    except OSError as e:
      raise CorruptDatasetError(
          f'{path} is not a readable HDF5 file ({e}); delete it and load again.'
      ) from e
    if 'examples' not in self._file:
      self._file.close()
      raise CorruptDatasetError(f'{path} has no top-level group "examples" (TFF HDF5ClientData).')
    self._examples = self._file['examples']

  def close(self) -> None:
    with self._lock:
      self._file.close()

  def __reduce__(self) -> tuple:
    return _open_reader, (type(self), self.path)

  def clients(self) -> tuple[list[str], dict[str, int]]:
    """Client ids sorted as TFF sorts them, and their sizes from the ``label`` dataset shapes."""
    with self._lock:
      client_ids = sorted(str(c) for c in self._examples.keys())
      try:
        sizes = {c: int(self._examples[c]['label'].shape[0]) for c in client_ids}
      except (KeyError, IndexError, TypeError) as e:
        message = f'{self.path}: a client group lacks a "label" dataset ({e}).'
        raise CorruptDatasetError(message) from e
    if not client_ids:
      raise CorruptDatasetError(f'{self.path} has no clients.')
    return client_ids, sizes

  def load(self, client_id: str) -> dict[str, np.ndarray]:
    with self._lock:
      group = self._examples[client_id]
      try:
        pixels = np.asarray(group['pixels'][()], dtype=np.float32)
        label = np.asarray(group['label'][()], dtype=np.int32)
      except KeyError as e:
        raise CorruptDatasetError(f'{self.path}: client {client_id!r} lacks {e}.') from e
    n = label.shape[0] if label.ndim == 1 else -1
    if n < 0 or pixels.size != n * _PIXELS_SHAPE[0] * _PIXELS_SHAPE[1] or pixels.shape[0] != n:
      raise CorruptDatasetError(
          f'{self.path}: client {client_id!r} has pixels {pixels.shape} and labels {label.shape}; '
          f'expected [n, 28, 28] and [n].'
      )
    return {'label': label, 'pixels': pixels.reshape((n,) + _PIXELS_SHAPE)}

  def client_data(self) -> ClientData:
    client_ids, sizes = self.clients()
    return ClientData.from_loader(client_ids, self.load, sizes=sizes)


_READERS: dict[tuple, Any] = {}
_READERS_LOCK = threading.Lock()


def _open_reader(cls: type, path: str) -> Any:
  """The process's shared reader of ``path`` (reopened if the file was replaced or after a fork)."""
  real = os.path.realpath(path)
  st = os.stat(real)
  key = (cls.__name__, real, st.st_size, st.st_mtime_ns, st.st_ino, os.getpid())
  with _READERS_LOCK:
    reader = _READERS.get(key)
    if reader is None:
      # Forget handles of an older file at this path or of a parent process; ClientData made
      # from them keep theirs (closed when no longer referenced).
      for old in [k for k in _READERS if k[:2] == key[:2]]:
        del _READERS[old]
      reader = _READERS[key] = cls(path)
  return reader


def _close_readers() -> None:
  """Closes every shared handle (for tests); ClientData made before can no longer load."""
  with _READERS_LOCK:
    for key, reader in list(_READERS.items()):
      if key[-1] == os.getpid():
        reader.close()
    _READERS.clear()


# Cache layout, download, verification -----------------------------------------------------------


def _resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> str:
  if cache_dir is None:
    return default_cache_dir()
  return os.path.abspath(os.path.expanduser(os.fspath(cache_dir)))


class _Paths:
  """Where each file of one variant lives in a cache directory."""

  def __init__(self, directory: str, only_digits: bool):
    self.directory = directory
    self.only_digits = only_digits
    prefix = _HDF5_PREFIX[only_digits]
    self.sqlite = os.path.join(directory, _SQLITE_FILE)
    self.sqlite_lzma = os.path.join(directory, _SQLITE.filename)
    self.h5_train = os.path.join(directory, f'{prefix}_train.h5')
    self.h5_test = os.path.join(directory, f'{prefix}_test.h5')
    self.tar = os.path.join(directory, _HDF5[only_digits].filename)


def _ensure_local(paths: _Paths, download: bool) -> str:
  """Makes one complete format available locally; returns ``'sqlite'`` or ``'hdf5'``."""
  if os.path.isfile(paths.sqlite):
    return 'sqlite'
  if os.path.isfile(paths.h5_train) and os.path.isfile(paths.h5_test):
    return 'hdf5'
  if os.path.isfile(paths.sqlite_lzma):
    try:
      with open(paths.sqlite_lzma, 'rb') as source:
        _save_sqlite(source, None, paths, origin=paths.sqlite_lzma, action='Decompressing')
    except CorruptDatasetError as e:
      raise CorruptDatasetError(f'{e} Delete it, or replace it with {_SQLITE.url}.') from None
    return 'sqlite'
  if os.path.isfile(paths.tar):
    _verify_file_hash(paths.tar, _HDF5[paths.only_digits])
    _extract_hdf5(paths)
    return 'hdf5'
  if not download:
    raise DatasetNotFoundError(_not_found_message(paths, 'download=False was given'))
  failures = []
  for fetch in (_download_sqlite, _download_hdf5):
    try:
      fetch(paths)
      return 'sqlite' if fetch is _download_sqlite else 'hdf5'
    except Exception as e:  # Any failure moves on to the next source; all are reported.
      _log.warning('Fetching federated EMNIST with %s failed: %s', fetch.__name__, e)
      failures.append(e)
  reasons = '; '.join(f'{type(e).__name__}: {e}' for e in failures)
  raise DatasetNotFoundError(_not_found_message(paths, f'downloading failed ({reasons})')) from (
      failures[-1]
  )


def _not_found_message(paths: _Paths, reason: str) -> str:
  tar = _HDF5[paths.only_digits]
  return (
      f'Federated EMNIST (only_digits={paths.only_digits}) is not in the cache directory '
      f'{paths.directory} and was not downloaded: {reason}.\n'
      f'Missing file: {paths.sqlite}\n'
      'To use it offline, place ONE of these there, then call load_data again:\n'
      f'  1. {paths.sqlite}  (TFF\'s current SQLite format): fetch {_SQLITE.url} and decompress it '
      f'(`unlzma {_SQLITE.filename}`), or place the downloaded file itself at {paths.sqlite_lzma}\n'
      f'  2. {paths.h5_train} and {paths.h5_test}  (TFF\'s older HDF5 format, needs '
      f'{_INSTALL_HINT}): extract them from {tar.url}, or place that archive itself at '
      f'{paths.tar}\n'
      'Another directory can be chosen with load_data(cache_dir=...) or the FEDJAX_LIKE_CACHE '
      'environment variable (the files then go in $FEDJAX_LIKE_CACHE/emnist).'
  )


def _open_url(url: str) -> Any:
  """Opens ``url`` for streaming: the only function in this module that uses the network."""
  request = urllib.request.Request(url, headers={'User-Agent': 'fedjax_like'})
  return urllib.request.urlopen(request, timeout=60)


@contextlib.contextmanager
def _progress(total: int | None, desc: str) -> Iterator[Callable[[int], Any]]:
  """A tqdm byte counter when tqdm is installed (and the output is a terminal); else nothing."""
  try:
    from tqdm.auto import tqdm  # Optional dependency.
  except ImportError:
    yield lambda n: None
    return
  # disable=None: no bar when the output is not a terminal (logs, CI).
  bar = tqdm(total=total, desc=desc, unit='B', unit_scale=True, unit_divisor=1024, disable=None)
  with bar:
    yield bar.update


def _fsync_dir(directory: str) -> None:
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def _atomic_write(
    dest: str, write: Callable[[IO[bytes]], None], verify: Callable[[str], None] | None = None
) -> None:
  """Writes ``dest`` all or nothing: a temp file in its directory, fsynced, verified, renamed."""
  directory = os.path.dirname(dest)
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(dest)}.', suffix='.partial', dir=directory)
  try:
    with os.fdopen(fd, 'wb') as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    if verify is not None:
      verify(tmp)
    os.replace(tmp, dest)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise
  _fsync_dir(directory)


def _content_length(response: Any) -> int | None:
  value = getattr(response, 'headers', {}).get('Content-Length')
  return int(value) if value is not None else None


def _check_release(
    num_bytes: int, digest: str, total: int | None, release: _Release, origin: str
) -> None:
  if total is not None and num_bytes != total:
    raise CorruptDatasetError(f'{origin} ended after {num_bytes} of {total} bytes (truncated).')
  if release.size is not None and num_bytes != release.size:
    raise CorruptDatasetError(
        f'{origin} has {num_bytes} bytes; the published {release.filename} has {release.size}.'
    )
  if release.sha256 is not None and digest != release.sha256:
    raise CorruptDatasetError(
        f'{origin} has SHA-256 {digest}; the published {release.filename} has {release.sha256}.'
    )


def _check_client_counts(num_clients: int, expected: int, where: str) -> None:
  if num_clients != expected:
    raise CorruptDatasetError(f'{where} has {num_clients} clients; TFF\'s release has {expected}.')


def _verify_sqlite(path: str) -> None:
  """Structure of a fresh database: TFF's tables, every split with TFF's number of clients."""
  reader = _SqliteReader(path)
  try:
    for only_digits, splits in _SQLITE_SPLITS.items():
      for split in splits:
        client_ids, _ = reader.clients(split)
        _check_client_counts(len(client_ids), _NUM_CLIENTS[only_digits], f'split {split!r}')
  finally:
    reader.close()


def _save_sqlite(
    source: IO[bytes], total: int | None, paths: _Paths, origin: str, action: str = 'Fetching'
) -> None:
  """Decompresses ``emnist_all.sqlite.lzma`` from a stream into the cache, checking everything.

  ``total`` is the byte count the source announced (e.g. Content-Length), if any.
  """
  _log.info('Writing %s from %s', paths.sqlite, origin)

  def write(out: IO[bytes]) -> None:
    digest = hashlib.sha256()
    decompressor = lzma.LZMADecompressor()
    num_bytes = written = 0
    with _progress(total or _SQLITE.size, f'{action} {_SQLITE.filename}') as update:
      while chunk := source.read(_CHUNK):
        digest.update(chunk)
        num_bytes += len(chunk)
        update(len(chunk))
        try:
          data = decompressor.decompress(chunk)
        except (lzma.LZMAError, EOFError) as e:
          raise CorruptDatasetError(f'{origin} is not valid LZMA data ({e}).') from e
        out.write(data)
        written += len(data)
    _check_release(num_bytes, digest.hexdigest(), total, _SQLITE, origin)
    if not decompressor.eof:
      raise CorruptDatasetError(f'{origin} ends before its LZMA stream does (truncated).')
    expected = _SQLITE.decompressed_size
    if expected is not None and written != expected:
      raise CorruptDatasetError(f'{origin} decompresses to {written} bytes, not {expected}.')

  _atomic_write(paths.sqlite, write, _verify_sqlite)


def _download_sqlite(paths: _Paths) -> None:
  _log.info('Downloading %s to %s', _SQLITE.url, paths.sqlite)
  with _open_url(_SQLITE.url) as response:
    _save_sqlite(response, _content_length(response), paths, origin=_SQLITE.url)


def _verify_file_hash(path: str, release: _Release) -> None:
  digest = hashlib.sha256()
  num_bytes = 0
  with open(path, 'rb') as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
      num_bytes += len(chunk)
  try:
    _check_release(num_bytes, digest.hexdigest(), None, release, path)
  except CorruptDatasetError as e:
    raise CorruptDatasetError(f'{e} Delete it, or replace it with {release.url}.') from None


def _verify_hdf5(path: str, only_digits: bool) -> None:
  reader = _Hdf5Reader(path)
  try:
    client_ids, _ = reader.clients()
    _check_client_counts(len(client_ids), _NUM_CLIENTS[only_digits], os.path.basename(path))
    reader.load(client_ids[0])
  finally:
    reader.close()


def _extract_hdf5(paths: _Paths) -> None:
  """Extracts the two ``.h5`` files from a verified ``.tar.bz2`` in one streaming pass.

  Members are matched by base name and written only to their fixed cache paths (nothing else in
  the archive is extracted, so member paths cannot escape the cache directory).
  """
  _import_h5py()  # Fail before extracting a gigabyte that could not be read.
  wanted = {os.path.basename(p): p for p in (paths.h5_train, paths.h5_test)}
  done = set()
  try:
    with tarfile.open(paths.tar, 'r|bz2') as archive:
      for member in archive:
        name = os.path.basename(member.name)
        if not member.isfile() or name not in wanted or name in done:
          continue
        source = archive.extractfile(member)
        if source is None:
          raise CorruptDatasetError(f'{paths.tar}: {member.name} has no contents.')

        def write(out: IO[bytes], source: IO[bytes] = source, member: tarfile.TarInfo = member):
          with _progress(member.size, f'Extracting {member.name}') as update:
            while chunk := source.read(_CHUNK):
              out.write(chunk)
              update(len(chunk))

        verify = functools.partial(_verify_hdf5, only_digits=paths.only_digits)
        _atomic_write(wanted[name], write, verify)
        done.add(name)
  except (tarfile.TarError, EOFError) as e:
    raise CorruptDatasetError(f'{paths.tar} is not a readable .tar.bz2 archive ({e}).') from e
  missing = sorted(set(wanted) - done)
  if missing:
    raise CorruptDatasetError(f'{paths.tar} does not contain {missing}.')


def _download_hdf5(paths: _Paths) -> None:
  _import_h5py()  # Without h5py the files could not be read; don't download them.
  release = _HDF5[paths.only_digits]
  _log.info('Downloading %s to %s', release.url, paths.tar)

  with _open_url(release.url) as response:
    total = _content_length(response)
    result: dict[str, Any] = {}

    def write(out: IO[bytes]) -> None:
      digest = hashlib.sha256()
      num_bytes = 0
      with _progress(total, f'Fetching {release.filename}') as update:
        while chunk := response.read(_CHUNK):
          digest.update(chunk)
          num_bytes += len(chunk)
          out.write(chunk)
          update(len(chunk))
      result['check'] = (num_bytes, digest.hexdigest())

    def verify(_: str) -> None:
      _check_release(*result['check'], total, release, release.url)

    _atomic_write(paths.tar, write, verify)
  _extract_hdf5(paths)
  with contextlib.suppress(OSError):  # Extracted and verified: the archive is no longer needed.
    os.remove(paths.tar)

