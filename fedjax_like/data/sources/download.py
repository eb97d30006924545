"""Getting a dataset's published files into the local cache: resumable, verified, atomic.

TFF's own ``download.get_compressed_file`` streams ``<name>.sqlite.lzma`` straight into
``<cache_dir>/<name>.sqlite``; a killed download leaves a truncated database under the final name
that every later load takes as complete (TFF issue #3479). Here:

* :func:`fetch` downloads the file as served to ``.<name>.partial`` beside its final path, and on
  a dropped connection keeps those bytes: the next call asks the server for the rest
  (``Range: bytes=N-``) and appends, starting over when the server ignores the range. The whole
  file is then checked (length, and size and SHA-256 where the release is known) and renamed into
  place. A file that fails its check is deleted, never left under its final name.
* :func:`decompress_lzma` writes the decompressed file all or nothing: a temporary file in the same
  directory, fsynced, checked (a complete LZMA stream, the expected sizes, then the caller's check
  of the result, e.g. the database's tables and client counts), then renamed.
* :func:`get_compressed_file` is the usual sequence for one ``.lzma`` release: the decompressed
  file if cached, else a compressed one placed by hand, else a download; with ``download=False``,
  or when the network fails, :class:`DatasetNotFoundError` names the missing file, the path to put
  it at and the URL to fetch it from.

Only :func:`_open_url` touches the network. Concurrent loads of one cache directory are serialized
by an advisory lock on the directory (POSIX), so two processes never write the same file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import logging
import lzma
import os
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

from fedjax_like.data.sources import CorruptDatasetError, DatasetNotFoundError

_log = logging.getLogger(__name__)

BASE_URL = 'https://storage.googleapis.com/tff-datasets-public/'
_CHUNK = 1 << 20


class DownloadInterruptedError(DatasetNotFoundError):
  """A download stopped part way; its bytes are kept and the next load resumes it."""


@dataclasses.dataclass(frozen=True)
class Release:
  """One file as published, and what a correct copy of it looks like.

  Attributes:
    url: where it is served.
    size: bytes served (the compressed size); None where unknown.
    sha256: hex digest of the bytes served; None where unpublished.
    decompressed_size: bytes after decompression; None where unknown.
  """

  url: str
  size: int | None = None
  sha256: str | None = None
  decompressed_size: int | None = None

  @property
  def filename(self) -> str:
    return self.url.rsplit('/', 1)[-1]


# Cache location ---------------------------------------------------------------------------------


def default_cache_dir(name: str) -> str:
  """``$FEDJAX_LIKE_CACHE/<name>`` if that variable is set, else ``~/.cache/fedjax_like/<name>``."""
  root = os.environ.get('FEDJAX_LIKE_CACHE') or os.path.join('~', '.cache', 'fedjax_like')
  return os.path.abspath(os.path.join(os.path.expanduser(root), name))


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None, name: str) -> str:
  """``cache_dir`` made absolute, or :func:`default_cache_dir` of ``name`` when None."""
  if cache_dir is None:
    return default_cache_dir(name)
  return os.path.abspath(os.path.expanduser(os.fspath(cache_dir)))


def not_found_message(
    what: str, directory: str, missing: str, reason: str, choices: Sequence[str], name: str
) -> str:
  """The offline error: what is missing, where each acceptable file goes, where to fetch it."""
  lead = 'place ONE of these there' if len(choices) > 1 else 'place this there'
  lines = [
      f'{what} is not in the cache directory {directory} and was not downloaded: {reason}.',
      f'Missing file: {missing}',
      f'To use it offline, {lead}, then load again:',
      *(f'  {i}. {choice}' for i, choice in enumerate(choices, start=1)),
      'Another directory can be chosen with load_data(cache_dir=...) or the FEDJAX_LIKE_CACHE '
      f'environment variable (the files then go in $FEDJAX_LIKE_CACHE/{name}).',
  ]
  return '\n'.join(lines)


def lzma_choice(release: Release, decompressed: str, compressed: str, note: str = '') -> str:
  """The usual offline instruction for a ``.lzma`` release."""
  return (
      f'{decompressed}{note}: fetch {release.url} and decompress it (`unlzma {release.filename}`), '
      f'or place the downloaded file itself at {compressed}'
  )


# Writing files ----------------------------------------------------------------------------------


@contextlib.contextmanager
def progress(total: int | None, desc: str, initial: int = 0) -> Iterator[Callable[[int], Any]]:
  """A tqdm byte counter when tqdm is installed (and the output is a terminal); else nothing."""
  try:
    from tqdm.auto import tqdm  # Optional dependency.
  except ImportError:
    yield lambda n: None
    return
  # disable=None: no bar when the output is not a terminal (logs, CI).
  bar = tqdm(
      total=total, initial=initial, desc=desc, unit='B', unit_scale=True, unit_divisor=1024,
      disable=None,
  )
  with bar:
    yield bar.update


def _fsync_dir(directory: str) -> None:
  """Makes a rename in ``directory`` durable, where the platform allows it."""
  with contextlib.suppress(OSError):
    fd = os.open(directory, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)


_DIR_LOCKS: dict[str, list[Any]] = {}  # realpath -> [RLock, locked fd or None, depth]
_DIR_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def directory_lock(directory: str) -> Iterator[None]:
  """Holds an exclusive lock on ``directory`` (created if needed) against other threads and, by
  ``flock``, other processes; re-entrant within a thread. No process lock without ``fcntl``."""
  os.makedirs(directory, exist_ok=True)
  real = os.path.realpath(directory)
  with _DIR_LOCKS_GUARD:
    entry = _DIR_LOCKS.setdefault(real, [threading.RLock(), None, 0])
  with entry[0]:
    if entry[2] == 0:
      try:
        import fcntl
      except ImportError:
        fcntl = None
      if fcntl is not None:
        fd = os.open(real, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        entry[1] = fd
    entry[2] += 1
    try:
      yield
    finally:
      entry[2] -= 1
      if entry[2] == 0 and entry[1] is not None:
        os.close(entry[1])  # Releases the flock.
        entry[1] = None


def atomic_write(
    dest: str, write: Callable[[IO[bytes]], None], verify: Callable[[str], None] | None = None
) -> None:
  """Writes ``dest`` all or nothing: a temp file in its directory, fsynced, verified, renamed.

  ``write(f)`` fills the file; ``verify(temp_path)`` may raise to reject it. On any failure the
  temporary file is removed and ``dest`` is untouched.
  """
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


def check_release(num_bytes: int, digest: str | None, release: Release, origin: str) -> None:
  """Raises CorruptDatasetError when ``num_bytes`` or ``digest`` differ from the release's."""
  if release.size is not None and num_bytes != release.size:
    raise CorruptDatasetError(
        f'{origin} has {num_bytes} bytes; the published {release.filename} has {release.size}.'
    )
  if release.sha256 is not None and digest is not None and digest != release.sha256:
    raise CorruptDatasetError(
        f'{origin} has SHA-256 {digest}; the published {release.filename} has {release.sha256}.'
    )


def verify_file(path: str, release: Release) -> None:
  """Checks a whole file's size and SHA-256 against ``release``; the error says how to fix it."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  try:
    check_release(os.path.getsize(path), digest.hexdigest(), release, path)
  except CorruptDatasetError as e:
    raise CorruptDatasetError(f'{e} Delete it, or replace it with {release.url}.') from None


# Downloading ------------------------------------------------------------------------------------


def _open_url(url: str, start: int = 0) -> Any:
  """Opens ``url`` for streaming from byte ``start``: the only function here using the network."""
  headers = {'User-Agent': 'fedjax_like'}
  if start:
    headers['Range'] = f'bytes={start}-'
  return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)


def _resumed_from(response: Any, start: int) -> int:
  """Where the served bytes begin: ``start`` for a 206 answer to our range, else 0."""
  if not start or getattr(response, 'status', 200) != 206:
    return 0
  content_range = response.headers.get('Content-Range', '')
  return start if content_range.startswith(f'bytes {start}-') else 0


def _content_length(response: Any) -> int | None:
  value = getattr(response, 'headers', {}).get('Content-Length')
  return int(value) if value is not None else None


def fetch(release: Release, dest: str) -> None:
  """Downloads ``release`` to ``dest`` (the bytes as served), resuming an interrupted download.

  Raises:
    DownloadInterruptedError: the connection dropped; the bytes so far are kept in
      ``.<name>.partial`` beside ``dest``, and calling again resumes from there.
    CorruptDatasetError: the complete file has the wrong size or SHA-256 (it is deleted).
    OSError, urllib.error.URLError: the server could not be reached.
  """
  directory = os.path.dirname(dest)
  partial = os.path.join(directory, f'.{os.path.basename(dest)}.partial')
  with directory_lock(directory):
    if os.path.isfile(dest):  # Another process finished it while we waited.
      return
    start = os.path.getsize(partial) if os.path.isfile(partial) else 0
    if release.size is not None and start > release.size:
      os.remove(partial)
      start = 0
    _log.info('Downloading %s to %s (from byte %d)', release.url, dest, start)
    try:
      response = _open_url(release.url, start)
    except urllib.error.HTTPError as e:
      if not (start and e.code == 416):  # 416: nothing after `start`; the partial may be whole.
        raise
      response = None
    if response is not None:
      with response:
        start = _resumed_from(response, start)
        length = _content_length(response)
        total = start + length if length is not None else release.size
        interrupted = _stream_to(response, partial, start, total, release.filename)
      have = os.path.getsize(partial)
      if interrupted is not None or (total is not None and have < total):
        raise DownloadInterruptedError(
            f'Downloading {release.url} stopped after {have} of {total or "?"} bytes '
            f'({interrupted or "the server closed the connection"}). The bytes so far are kept in '
            f'{partial}; load again to resume.'
        )
    try:
      verify_file(partial, release)
    except CorruptDatasetError as e:
      os.remove(partial)
      raise CorruptDatasetError(
          f'The download of {release.url} is damaged ({e}); it was deleted. Load again to '
          'download it afresh.'
      ) from None
    os.replace(partial, dest)
    _fsync_dir(directory)


def _stream_to(response: Any, partial: str, start: int, total: int | None, name: str) -> Any:
  """Appends the response body to ``partial`` (truncated first when ``start`` is 0); returns the
  exception that cut the stream short, or None."""
  with open(partial, 'ab' if start else 'wb') as out, progress(
      total, f'Downloading {name}', start
  ) as update:
    try:
      while chunk := response.read(_CHUNK):
        out.write(chunk)
        update(len(chunk))
    except (OSError, http.client.HTTPException) as e:
      return e
    finally:
      out.flush()
      os.fsync(out.fileno())
  return None


# Decompressing ----------------------------------------------------------------------------------


def decompress_lzma(
    source: str,
    dest: str,
    release: Release | None = None,
    verify: Callable[[str], None] | None = None,
) -> None:
  """Decompresses the ``.lzma``/``.xz`` file ``source`` into ``dest``, all or nothing.

  Checks, while streaming: ``source``'s size and SHA-256 against ``release`` (when given), a
  complete LZMA stream, the release's decompressed size; then ``verify(temp_path)``.

  Raises:
    CorruptDatasetError: any check failed (``dest`` is not written; ``source`` is kept).
  """
  _log.info('Decompressing %s to %s', source, dest)

  def write(out: IO[bytes]) -> None:
    digest = hashlib.sha256()
    decompressor = lzma.LZMADecompressor()
    num_bytes = written = 0
    with open(source, 'rb') as f, progress(
        os.path.getsize(source), f'Decompressing {os.path.basename(source)}'
    ) as update:
      while chunk := f.read(_CHUNK):
        digest.update(chunk)
        num_bytes += len(chunk)
        update(len(chunk))
        try:
          data = decompressor.decompress(chunk)
        except (lzma.LZMAError, EOFError) as e:
          raise CorruptDatasetError(f'{source} is not valid LZMA data ({e}).') from e
        out.write(data)
        written += len(data)
    if release is not None:
      check_release(num_bytes, digest.hexdigest(), release, source)
    if not decompressor.eof:
      raise CorruptDatasetError(f'{source} ends before its LZMA stream does (truncated).')
    expected = release.decompressed_size if release is not None else None
    if expected is not None and written != expected:
      raise CorruptDatasetError(f'{source} decompresses to {written} bytes, not {expected}.')

  atomic_write(dest, write, verify)


def decompress_cached(
    release: Release, compressed: str, dest: str, verify: Callable[[str], None] | None
) -> None:
  """Decompresses a compressed file found in the cache; kept whatever happens."""
  try:
    decompress_lzma(compressed, dest, release, verify)
  except CorruptDatasetError as e:
    raise CorruptDatasetError(f'{e} Delete it, or replace it with {release.url}.') from None


def download_and_decompress(
    release: Release, compressed: str, dest: str, verify: Callable[[str], None] | None
) -> None:
  """Fetches ``release`` to ``compressed``, decompresses it to ``dest`` and removes it; a
  download that fails a check is removed too (an interrupted one is kept, to resume)."""
  fetch(release, compressed)
  try:
    decompress_lzma(compressed, dest, None, verify)  # fetch() already checked size and hash.
  finally:
    with contextlib.suppress(OSError):
      os.remove(compressed)


def get_compressed_file(
    release: Release,
    directory: str,
    *,
    download: bool = True,
    verify: Callable[[str], None] | None = None,
    what: str | None = None,
    name: str = '',
) -> str:
  """The path of ``release`` decompressed in ``directory``, getting it there if need be.

  In order: ``<directory>/<name>`` (the filename without ``.lzma``) if present; else a
  ``<filename>.lzma`` placed there, decompressed (and kept); else, when ``download``, a download
  (resumable), decompressed, then removed. ``verify(path)`` checks a freshly decompressed file
  (raising CorruptDatasetError); ``what`` names the dataset in errors and ``name`` is its cache
  subdirectory (for the FEDJAX_LIKE_CACHE hint).

  Raises:
    DatasetNotFoundError: not cached and ``download`` is False or the download failed; the
      message names the file, the path to put it at and the URL.
    CorruptDatasetError: a cached compressed file is damaged (kept; the message says so).
  """
  if not release.filename.endswith('.lzma'):
    raise ValueError(f'{release.url} is not an .lzma file.')
  compressed = os.path.join(directory, release.filename)
  dest = compressed[: -len('.lzma')]
  if os.path.isfile(dest):
    return dest
  if os.path.isfile(compressed):
    with directory_lock(directory):
      if not os.path.isfile(dest):
        decompress_cached(release, compressed, dest, verify)
    return dest
  what = what or release.filename
  choices = [lzma_choice(release, dest, compressed)]
  if not download:
    reason = 'download=False was given'
    raise DatasetNotFoundError(not_found_message(what, directory, dest, reason, choices, name))
  try:
    with directory_lock(directory):
      if not os.path.isfile(dest):
        download_and_decompress(release, compressed, dest, verify)
  except (OSError, http.client.HTTPException) as e:  # DatasetNotFoundError is an OSError too.
    reason = f'downloading failed ({type(e).__name__}: {e})'
    message = not_found_message(what, directory, dest, reason, choices, name)
    error = type(e) if isinstance(e, DatasetNotFoundError) else DatasetNotFoundError
    raise error(message) from e
  return dest
