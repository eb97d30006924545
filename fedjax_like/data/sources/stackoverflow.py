"""Federated StackOverflow exactly as TensorFlow Federated serves it, read without TensorFlow.

``load_data()`` returns ``(train, heldout, test)`` :class:`ClientData` matching
``tff.simulation.datasets.stackoverflow.load_data``: clients are StackOverflow users (342,477 train,
38,758 held-out, 204,088 test), ids Python-``sorted``, each user's examples (sentences of their
questions and answers) in TFF's order. Each example, in TFF's (lexicographic) key order:

* ``creation_date``: bytes, e.g. ``b'2010-01-08 09:34:05 UTC'``
* ``score``: int64 scalar, the question's score
* ``tags``: bytes, the question's tags separated by ``'|'``
* ``title``: bytes, the question's title
* ``tokens``: bytes, the sentence's lower-cased tokens separated by single spaces
* ``type``: bytes, ``b'question'`` or ``b'answer'``

(bytes features are object arrays of Python ``bytes``, ``[n]`` per client; TFF's are ``tf.string``.)
The file is TFF's ``stackoverflow.sqlite.lzma`` (``_RELEASE.url``) in TFF's SqlClientData schema
(:mod:`.sql_client_data`), splits ``train``, ``heldout`` and ``test``; it is looked for in
``cache_dir`` (default ``$FEDJAX_LIKE_CACHE/stackoverflow`` or
``~/.cache/fedjax_like/stackoverflow``) as ``stackoverflow.sqlite``, else ``stackoverflow.sqlite.lzma``, else downloaded.

:func:`load_word_counts` and :func:`load_tag_counts` read TFF's side files
``stackoverflow.word_count`` (lines ``word count``, most frequent first) and
``stackoverflow.tag_count`` (a JSON object ``{tag: count}``), published as ``.tar.bz2`` archives
with SHA-256s that TFF pins. They are looked for extracted or archived in ``cache_dir`` or in
``cache_dir/datasets`` (where TFF's Keras download puts them), else downloaded, checked and
extracted.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import os
import tarfile
from typing import IO

from fedjax_like.data.client_data import ClientData
from fedjax_like.data.sources import CorruptDatasetError, DatasetNotFoundError, download
from fedjax_like.data.sources import sql_client_data
from fedjax_like.data.sources.tf_example import FixedLenFeature

# TFF publishes no size or checksum for the database; a fresh copy is checked by schema and counts.
_RELEASE = download.Release(download.BASE_URL + 'stackoverflow.sqlite.lzma')
_SPLITS = ('train', 'heldout', 'test')
_NUM_CLIENTS = {'train': 342_477, 'heldout': 38_758, 'test': 204_088}
_SPEC = {
    'creation_date': FixedLenFeature((), 'string'),
    'score': FixedLenFeature((), 'int64'),
    'tags': FixedLenFeature((), 'string'),
    'title': FixedLenFeature((), 'string'),
    'tokens': FixedLenFeature((), 'string'),
    'type': FixedLenFeature((), 'string'),
}
# Side files: SHA-256s as TFF's stackoverflow.py pins them.
_WORD_COUNTS = download.Release(
    download.BASE_URL + 'stackoverflow.word_count.tar.bz2',
    sha256='1dc00256d6e527c54b9756d968118378ae14e6692c0b3b6cad470cdd3f0c519c',
)
_TAG_COUNTS = download.Release(
    download.BASE_URL + 'stackoverflow.tag_count.tar.bz2',
    sha256='6fe281cec490d9384a290d560072438e7e2b377bbb823876ce7bd6f82696772d',
)
_CHUNK = 1 << 20


def load_data(
    cache_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> tuple[ClientData, ClientData, ClientData]:
  """Federated StackOverflow ``(train, heldout, test)``, as TFF's ``load_data(cache_dir)``.

  Args:
    cache_dir: where ``stackoverflow.sqlite`` is (or goes); defaults to
      ``$FEDJAX_LIKE_CACHE/stackoverflow`` or ``~/.cache/fedjax_like/stackoverflow``.
    download: fetch the file when it is not cached. With False, a missing file raises at once.

  Returns:
    Three lazy ClientData; a client's dataset is ``{'creation_date': object[n], 'score':
    int64[n], 'tags': object[n], 'title': object[n], 'tokens': object[n], 'type': object[n]}``.

  Raises:
    DatasetNotFoundError: not cached and not downloaded; the message names the file, the path to
      put it at and the URL.
    CorruptDatasetError: a cached file is damaged or not in TFF's schema.
  """
  return sql_client_data.load_release(
      _RELEASE,
      cache_dir,
      name='stackoverflow',
      what='Federated StackOverflow',
      splits=_SPLITS,
      spec=_SPEC,
      postprocess=None,
      num_clients=_NUM_CLIENTS,
      allow_download=download,
  )


def load_word_counts(
    cache_dir: str | os.PathLike[str] | None = None,
    vocab_size: int | None = None,
    download: bool = True,
) -> collections.OrderedDict[str, int]:
  """``{word: count}`` in the file's order (most frequent first), as TFF's ``load_word_counts``.

  A count is the number of train users with at least one example containing the word.

  Args:
    cache_dir: where the side file is (or goes); as :func:`load_data`.
    vocab_size: keep only the first ``vocab_size`` words; None keeps all.
    download: fetch the file when it is not cached.

  Raises:
    TypeError: ``vocab_size`` is neither None nor an int.
    ValueError: ``vocab_size`` is not positive.
    DatasetNotFoundError: the file is not cached and not downloaded (the message says where to
      put it).
    CorruptDatasetError: the archive fails its SHA-256, or a line is not ``word count``.
  """
  if vocab_size is not None:
    if not isinstance(vocab_size, int):
      raise TypeError(f'vocab_size should be None or int, got {type(vocab_size)}.')
    if vocab_size <= 0:
      raise ValueError(f'vocab_size must be positive, got {vocab_size}.')
  path = _side_file(_WORD_COUNTS, 'stackoverflow.word_count', cache_dir, download)
  word_counts: collections.OrderedDict[str, int] = collections.OrderedDict()
  with open(path, encoding='utf-8') as f:
    for line_number, line in enumerate(f, start=1):
      parts = line.split()
      if len(parts) != 2 or not parts[1].lstrip('-').isdigit():
        raise CorruptDatasetError(
            f'{path}, line {line_number}: expected "word count", got {line.rstrip()!r}. Delete it '
            'and load again.'
        )
      word_counts[parts[0]] = int(parts[1])
      if vocab_size is not None and len(word_counts) >= vocab_size:
        break
  return word_counts


def load_tag_counts(
    cache_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> collections.OrderedDict[str, int]:
  """``{tag: count}`` by decreasing count (ties in file order), as TFF's ``load_tag_counts``.

  A count is the number of train users with at least one example with the tag.

  Raises:
    DatasetNotFoundError: the file is not cached and not downloaded.
    CorruptDatasetError: the archive fails its SHA-256, or the file is not a JSON object of counts.
  """
  path = _side_file(_TAG_COUNTS, 'stackoverflow.tag_count', cache_dir, download)
  try:
    with open(path, encoding='utf-8') as f:
      tag_counts = json.load(f)
    if not isinstance(tag_counts, dict) or not all(
        isinstance(v, int) for v in tag_counts.values()
    ):
      raise ValueError('not a JSON object of integer counts')
  except ValueError as e:
    raise CorruptDatasetError(
        f'{path} is not a tag count file ({e}); delete it and load again.'
    ) from e
  return collections.OrderedDict(sorted(tag_counts.items(), key=lambda item: item[1], reverse=True))


# Side files -------------------------------------------------------------------------------------


def _side_file(
    release: download.Release, member: str, cache_dir: str | None, allow_download: bool
) -> str:
  """The extracted ``member`` of ``release``'s archive: found, extracted from a found (and
  verified) archive, or downloaded, verified and extracted (the archive then removed)."""
  directory = download.resolve_cache_dir(cache_dir, 'stackoverflow')
  places = (directory, os.path.join(directory, 'datasets'))
  for place in places:
    if os.path.isfile(os.path.join(place, member)):
      return os.path.join(place, member)
  dest = os.path.join(directory, member)
  for place in places:
    archive = os.path.join(place, release.filename)
    if os.path.isfile(archive):
      with download.directory_lock(directory):
        download.verify_file(archive, release)
        _extract(archive, member, dest)
      return dest
  archive = os.path.join(directory, release.filename)
  choices = [
      f'{dest}: extract it from {release.url}, or place that archive itself at {archive} (or in '
      f'{places[1]}, where TFF keeps it)'
  ]
  what = f'StackOverflow\'s {member.split(".")[-1].replace("_", " ")}s'
  if not allow_download:
    message = download.not_found_message(
        what, directory, dest, 'download=False was given', choices, 'stackoverflow'
    )
    raise DatasetNotFoundError(message)
  try:
    with download.directory_lock(directory):
      if not os.path.isfile(dest):
        download.fetch(release, archive)
        try:
          _extract(archive, member, dest)
        finally:
          with contextlib.suppress(OSError):
            os.remove(archive)
  except (OSError, http.client.HTTPException) as e:
    reason = f'downloading failed ({type(e).__name__}: {e})'
    message = download.not_found_message(what, directory, dest, reason, choices, 'stackoverflow')
    error = type(e) if isinstance(e, DatasetNotFoundError) else DatasetNotFoundError
    raise error(message) from e
  return dest


def _extract(archive: str, member: str, dest: str) -> None:
  """Writes the archive's file named ``member`` (matched by base name) to ``dest``, atomically."""
  try:
    with tarfile.open(archive, 'r:*') as tar:
      for info in tar:
        if info.isfile() and os.path.basename(info.name) == member:
          source = tar.extractfile(info)
          if source is None:
            break

          def write(out: IO[bytes], source: IO[bytes] = source) -> None:
            while chunk := source.read(_CHUNK):
              out.write(chunk)

          download.atomic_write(dest, write)
          return
  except (tarfile.TarError, EOFError, OSError) as e:
    raise CorruptDatasetError(f'{archive} is not a readable tar archive ({e}); delete it.') from e
  raise CorruptDatasetError(f'{archive} does not contain {member}; delete it.')
