"""Federated EMNIST exactly as TensorFlow Federated serves it, read without TensorFlow.

``load_data(only_digits=True)`` returns ``(train, test)`` :class:`ClientData` matching
``tff.simulation.datasets.emnist.load_data``: the same client ids in the same order (sorted, as
TFF sorts them), each client's examples in the same order, each example
``{'label': int32[], 'pixels': float32[28, 28]}``. Pixels are served as stored: values in [0, 1]
with 1.0 for the background and 0.0 for the ink (the inverse of MNIST; nothing here flips or
rescales them). Digits only: 3,383 writers, 10 classes; all characters: 3,400 writers, 62 classes.

Two published file formats are read, whichever is in the cache:

* SQLite, what TFF's loader has used since February 2021 (``tensorflow_federated/python/simulation/
  datasets/emnist.py``): one database ``emnist_all.sqlite`` for both variants, published
  LZMA-compressed at ``_SQLITE.url``, in TFF's SqlClientData schema (:mod:`.sql_client_data`).
  Each row's ``tf.train.Example`` has ``pixels`` (float_list, 784 values, row-major 28x28) and
  ``label`` (int64_list, one value, served as int32 as TFF casts it). Splits:
  ``digits_only_train``, ``digits_only_test``, ``all_train``, ``all_test``.
* HDF5, what TFF's loader used before (and FedJAX 0.0.x through it), :mod:`.hdf5_client_data`:
  ``fed_emnist_digitsonly.tar.bz2`` (or ``fed_emnist.tar.bz2``) holding ``<prefix>_train.h5`` and
  ``<prefix>_test.h5``, each with groups ``examples/<client_id>/{label, pixels}``. Needs ``h5py``
  (``pip install 'fedjax_like[emnist]'``).

Files live in ``cache_dir``, by default ``$FEDJAX_LIKE_CACHE/emnist`` or else
``~/.cache/fedjax_like/emnist``. On first use the SQLite release is downloaded (the HDF5 one if that
fails) by :mod:`.download`: resumable, checked (size and SHA-256, then the database's structure and
client counts) and written atomically, so a file under its final name is always complete. A file
placed by hand works too: ``emnist_all.sqlite`` (or ``emnist_all.sqlite.lzma``), or the two
``.h5`` files (or the ``.tar.bz2``), in the cache directory.

Loading is lazy: building the ClientData reads only client ids and sizes; a client's examples are
read and decoded when its dataset is asked for. Each file is opened once per process and shared by
every ClientData that reads it (:mod:`.handles`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import tarfile
from typing import IO

import numpy as np

from fedjax_like.data.client_data import ClientData
from fedjax_like.data.sources import (
    CorruptDatasetError,
    DatasetNotFoundError,
    download,
    handles,
    hdf5_client_data,
    sql_client_data,
)
from fedjax_like.data.sources.tf_example import FixedLenFeature, ProtoDecodeError, parse_example

__all__ = [
    'CorruptDatasetError',
    'ProtoDecodeError',
    'available',
    'default_cache_dir',
    'load_data',
    'parse_example',
]

_log = logging.getLogger(__name__)

_INSTALL_HINT = "pip install 'fedjax_like[emnist]'"
_CHUNK = 1 << 20

# TFF's current loader (since 2021-02). TFF publishes no checksum for it: size and SHA-256 are those
# a third-party provenance manifest records for this exact URL (its download script pins the same
# values). A mismatch fails the download, which then falls back to the HDF5 release.
_SQLITE_FILE = 'emnist_all.sqlite'
_SQLITE = download.Release(
    url=download.BASE_URL + 'emnist_all.sqlite.lzma',
    size=170_507_172,
    sha256='c3aaf91b4cf4e69d53d81627ad119eccdc878ff906f68e66063ff10f67faad48',
    decompressed_size=4_708_990_976,
)
_SQLITE_SPLITS = {True: ('digits_only_train', 'digits_only_test'), False: ('all_train', 'all_test')}

# TFF's loader before 2021-02 (same file, commit 7bb20162f^): SHA-256s published by TFF itself.
_HDF5_PREFIX = {True: 'fed_emnist_digitsonly', False: 'fed_emnist'}
_HDF5 = {
    True: download.Release(
        url=download.BASE_URL + 'fed_emnist_digitsonly.tar.bz2',
        sha256='55333deb8546765427c385710ca5e7301e16f4ed8b60c1dc5ae224b42bd5b14b',
    ),
    False: download.Release(
        url=download.BASE_URL + 'fed_emnist.tar.bz2',
        sha256='fe1ed5a502cea3a952eb105920bff8cffb32836b5173cb18a57a32c3606f3ea0',
    ),
}

# Clients per split (train and test have the same writers), as TFF documents and tests.
_NUM_CLIENTS = {True: 3383, False: 3400}

_PIXELS_SHAPE = (28, 28)
_SPEC = {'label': FixedLenFeature((), 'int64'), 'pixels': FixedLenFeature(_PIXELS_SHAPE, 'float32')}


# Public API -------------------------------------------------------------------------------------


def default_cache_dir() -> str:
  """``$FEDJAX_LIKE_CACHE/emnist`` if that variable is set, else ``~/.cache/fedjax_like/emnist``."""
  return download.default_cache_dir('emnist')


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
  paths = _Paths(_cache_dir(cache_dir), only_digits)
  if _ensure_local(paths, download) == 'sqlite':
    try:
      reader = handles.open_shared(sql_client_data.SqlReader, paths.sqlite)
    except CorruptDatasetError as e:
      raise CorruptDatasetError(f'{e} Or replace it with the decompressed {_SQLITE.url}.') from None
    train_split, test_split = _SQLITE_SPLITS[only_digits]
    return tuple(reader.client_data(s, _SPEC, _cast_label) for s in (train_split, test_split))
  _import_h5py()
  return tuple(
      handles.open_shared(hdf5_client_data.Hdf5Reader, p).client_data(
          ('label', 'pixels'), _check_hdf5_client
      )
      for p in (paths.h5_train, paths.h5_test)
  )


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> str:
  return download.resolve_cache_dir(cache_dir, 'emnist')  # (load_data's `download` is a flag.)


def available(only_digits: bool = True, cache_dir: str | os.PathLike[str] | None = None) -> bool:
  """Whether :func:`load_data` would find the data locally (no network), checked cheaply.

  True when a complete ``emnist_all.sqlite`` (or its ``.lzma``) is in the cache, or, with h5py
  installed, both ``.h5`` files of this variant (or their ``.tar.bz2``). Leftover partial downloads
  do not count. Files are not decoded, so a damaged archive can still fail in ``load_data``.
  """
  paths = _Paths(_cache_dir(cache_dir), bool(only_digits))
  if os.path.isfile(paths.sqlite) and sql_client_data.file_problem(paths.sqlite) is None:
    return True
  if os.path.isfile(paths.sqlite_lzma):
    return True
  hdf5 = (os.path.isfile(paths.h5_train) and os.path.isfile(paths.h5_test)) or os.path.isfile(
      paths.tar
  )
  return hdf5 and importlib.util.find_spec('h5py') is not None


# Decoding ---------------------------------------------------------------------------------------


def _cast_label(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """TFF parses ``label`` as int64 and casts it to int32."""
  return {'label': arrays['label'].astype(np.int32), 'pixels': arrays['pixels']}


def _check_hdf5_client(path: str, client_id: str, arrays: dict[str, np.ndarray]) -> dict:
  pixels = np.asarray(arrays['pixels'], dtype=np.float32)
  label = np.asarray(arrays['label'], dtype=np.int32)
  n = label.shape[0] if label.ndim == 1 else -1
  if n < 0 or pixels.size != n * _PIXELS_SHAPE[0] * _PIXELS_SHAPE[1] or pixels.shape[0] != n:
    raise CorruptDatasetError(
        f'{path}: client {client_id!r} has pixels {pixels.shape} and labels {label.shape}; '
        f'expected [n, 28, 28] and [n].'
    )
  return {'label': label, 'pixels': pixels.reshape((n,) + _PIXELS_SHAPE)}


def _import_h5py() -> None:
  try:
    hdf5_client_data.import_h5py()
  except ImportError as e:
    raise ImportError(
        f'Reading the HDF5 EMNIST files needs h5py, which is not installed: {_INSTALL_HINT} '
        f'(or place {_SQLITE_FILE} in the cache directory, which needs no extra package).'
    ) from e


# Cache layout, download, verification -----------------------------------------------------------


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


def _ensure_local(paths: _Paths, allow_download: bool) -> str:
  """Makes one complete format available locally; returns ``'sqlite'`` or ``'hdf5'``."""
  if os.path.isfile(paths.sqlite):
    return 'sqlite'
  if os.path.isfile(paths.h5_train) and os.path.isfile(paths.h5_test):
    return 'hdf5'
  if os.path.isfile(paths.sqlite_lzma):
    with download.directory_lock(paths.directory):
      if not os.path.isfile(paths.sqlite):
        download.decompress_cached(_SQLITE, paths.sqlite_lzma, paths.sqlite, _verify_sqlite)
    return 'sqlite'
  if os.path.isfile(paths.tar):
    download.verify_file(paths.tar, _HDF5[paths.only_digits])
    _extract_hdf5(paths)
    return 'hdf5'
  if not allow_download:
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
  choices = [
      download.lzma_choice(
          _SQLITE, paths.sqlite, paths.sqlite_lzma, " (TFF's current SQLite format)"
      ),
      f"{paths.h5_train} and {paths.h5_test}  (TFF's older HDF5 format, needs {_INSTALL_HINT}): "
      f'extract them from {tar.url}, or place that archive itself at {paths.tar}',
  ]
  what = f'Federated EMNIST (only_digits={paths.only_digits})'
  return download.not_found_message(what, paths.directory, paths.sqlite, reason, choices, 'emnist')


def _verify_sqlite(path: str) -> None:
  """Structure of a fresh database: TFF's tables, every split with TFF's number of clients."""
  expected = {s: _NUM_CLIENTS[d] for d, splits in _SQLITE_SPLITS.items() for s in splits}
  sql_client_data.check_client_counts(path, expected)


def _download_sqlite(paths: _Paths) -> None:
  with download.directory_lock(paths.directory):
    if not os.path.isfile(paths.sqlite):
      download.download_and_decompress(_SQLITE, paths.sqlite_lzma, paths.sqlite, _verify_sqlite)


def _verify_hdf5(path: str, only_digits: bool) -> None:
  reader = hdf5_client_data.Hdf5Reader(path)
  try:
    client_ids, _ = reader.clients('label')
    if len(client_ids) != _NUM_CLIENTS[only_digits]:
      raise CorruptDatasetError(
          f'{os.path.basename(path)} has {len(client_ids)} clients; TFF\'s release has '
          f'{_NUM_CLIENTS[only_digits]}.'
      )
    _check_hdf5_client(path, client_ids[0], reader.read(client_ids[0], ('label', 'pixels')))
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
          with download.progress(member.size, f'Extracting {member.name}') as update:
            while chunk := source.read(_CHUNK):
              out.write(chunk)
              update(len(chunk))

        download.atomic_write(wanted[name], write, lambda p: _verify_hdf5(p, paths.only_digits))
        done.add(name)
  except (tarfile.TarError, EOFError) as e:
    raise CorruptDatasetError(f'{paths.tar} is not a readable .tar.bz2 archive ({e}).') from e
  missing = sorted(set(wanted) - done)
  if missing:
    raise CorruptDatasetError(f'{paths.tar} does not contain {missing}.')


def _download_hdf5(paths: _Paths) -> None:
  _import_h5py()  # Without h5py the files could not be read; don't download them.
  with download.directory_lock(paths.directory):
    download.fetch(_HDF5[paths.only_digits], paths.tar)
    _extract_hdf5(paths)
    with contextlib.suppress(OSError):  # Extracted and verified: the archive is no longer needed.
      os.remove(paths.tar)
