"""TFF's SQLite client data (``tff.simulation.datasets.SqlClientData``), read without TensorFlow.

The layout, from ``tensorflow_federated/python/simulation/datasets/sql_client_data.py`` and
``sql_client_data_utils.py``, in which TFF publishes EMNIST, Shakespeare, StackOverflow and
CIFAR-100:

* ``examples(split_name TEXT, client_id TEXT, serialized_example_proto BLOB)``: one serialized
  ``tf.train.Example`` per row; TFF's files index it on ``(split_name, client_id)``.
* ``client_metadata(client_id TEXT, split_name TEXT, num_examples INTEGER)``: one row per client
  of each split.

TFF's ``client_ids`` are the distinct ``client_metadata.client_id`` of a split, sorted with
Python's ``sorted()`` (code-point order, so ``'10' < '2'``). A client's examples are what
``SELECT serialized_example_proto FROM examples WHERE client_id = ? and split_name = ?`` returns,
in the order SQLite returns them (through the index: insertion order).

Reading is lazy: opening a split reads only ``client_metadata`` (ids and sizes stay in memory, not
examples); a client's rows are fetched and decoded when its dataset is asked for, through the
index. A cohort is read in one query (``ClientData.datasets_for_clients``: ``client_id IN`` the
cohort's ids) and its rows decoded together (:mod:`.tf_example_batch`). A file without that index
is scanned once per split to map each client to its row ids. One read-only connection per file is
shared by every split and thread (:mod:`.handles`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from fedjax_like.data.client_data import ClientData
from fedjax_like.data.sources import (
  CorruptDatasetError,
  download,
  handles,
  tf_example,
  tf_example_batch,
)

_log = logging.getLogger(__name__)

REQUIRED_COLUMNS = {
    'examples': ('split_name', 'client_id', 'serialized_example_proto'),
    'client_metadata': ('client_id', 'split_name', 'num_examples'),
}

_Postprocess = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def file_problem(path: str) -> str | None:
  """Why ``path`` is not a complete SQLite database, judged from its 100-byte header; None if it
  looks whole (a header check only: tables and rows are checked when it is opened)."""
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


def _has_client_index(conn: sqlite3.Connection, by_split: bool) -> bool:
  """Whether an index serves ``WHERE client_id = ?`` (``AND split_name = ?`` when ``by_split``)."""
  for row in conn.execute("PRAGMA index_list('examples')"):
    columns = [r[2] for r in conn.execute(f"PRAGMA index_info('{row[1]}')")]
    if columns[:1] == ['client_id']:
      return True
    if by_split and set(columns[:2]) == {'client_id', 'split_name'}:
      return True
  return False


class SqlReader:
  """One read-only connection to a TFF SQLite file, shared by every split and thread.

  Make it with ``handles.open_shared(SqlReader, path)`` to share it across ClientData.

  Raises (on construction):
    CorruptDatasetError: the file is truncated or not SQLite, or lacks a table or column of TFF's
      schema (the message names which).
  """

  def __init__(self, path: str):
    self.path = path
    problem = file_problem(path)
    if problem:
      raise CorruptDatasetError(
          f'{path} is not a usable TFF SQLite database: {problem}. Delete it and load again to '
          'download it afresh.'
      )
    self._lock = threading.Lock()
    uri = 'file:' + urllib.parse.quote(os.path.abspath(path)) + '?mode=ro'
    self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    try:
      query = "SELECT name FROM sqlite_master WHERE type='table'"
      tables = {r[0] for r in self._conn.execute(query)}
      missing = sorted(set(REQUIRED_COLUMNS) - tables)
      if missing:
        raise CorruptDatasetError(
            f'{path} lacks the tables {missing} of TFF SqlClientData (it needs examples and '
            'client_metadata); it is not a TFF dataset file.'
        )
      for table, needed in REQUIRED_COLUMNS.items():
        columns = {r[1] for r in self._conn.execute(f"PRAGMA table_info('{table}')")}
        lacking = [c for c in needed if c not in columns]
        if lacking:
          raise CorruptDatasetError(f'{path}: table {table} lacks the columns {lacking}.')
      self._indexed = {
          True: _has_client_index(self._conn, True),
          False: _has_client_index(self._conn, False),
      }
      try:  # JSON functions (SQLite >= 3.38, or built with JSON1) pass a cohort's ids at once.
        self._conn.execute("SELECT value FROM json_each('[1]')").fetchall()
        self._json = True
      except sqlite3.OperationalError:
        self._json = False
    except sqlite3.DatabaseError as e:
      self._conn.close()
      raise CorruptDatasetError(f'{path} is a damaged SQLite database ({e}); delete it.') from e
    except BaseException:
      self._conn.close()
      raise
    self._rowids: dict[str | None, dict[str, list[int]]] = {}

  def close(self) -> None:
    with self._lock:
      self._conn.close()

  def __reduce__(self) -> tuple:
    # Pickled (e.g. to a worker process) as its path; the unpickler opens its own shared handle.
    return handles.open_shared, (type(self), self.path)

  def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
    try:
      with self._lock:
        return self._conn.execute(sql, args).fetchall()
    except sqlite3.DatabaseError as e:
      message = f'{self.path} is a damaged SQLite database ({e}); delete it.'
      raise CorruptDatasetError(message) from e

  def clients(self, split: str | None) -> tuple[list[str], dict[str, int]]:
    """Client ids of ``split`` (all splits when None) sorted as TFF sorts them, and their
    ``num_examples`` from ``client_metadata``.

    Raises:
      CorruptDatasetError: the split has no clients (the message lists the splits there are).
    """
    where, args = ('WHERE split_name = ? ', (split,)) if split is not None else ('', ())
    rows = self._query(
        f'SELECT client_id, SUM(num_examples) FROM client_metadata {where}GROUP BY client_id', args
    )
    if not rows:
      splits = sorted(r[0] for r in self._query('SELECT DISTINCT split_name FROM client_metadata'))
      raise CorruptDatasetError(
          f'{self.path} has no clients in split {split!r} (its splits: {splits}).'
      )
    sizes = {str(client): int(n) for client, n in rows}
    return sorted(sizes), sizes

  def _rowid_index(self, split: str | None) -> dict[str, list[int]]:
    """Without an index on client_id: one scan maps each client to its rows (in table order)."""
    with self._lock:
      index = self._rowids.get(split)
    if index is None:
      _log.info('%s has no index on client_id; scanning it once for split %s.', self.path, split)
      where, args = ('WHERE split_name = ?', (split,)) if split is not None else ('', ())
      index = {}
      for rowid, client in self._query(f'SELECT rowid, client_id FROM examples {where}', args):
        index.setdefault(str(client), []).append(rowid)
      with self._lock:
        self._rowids[split] = index
    return index

  def serialized_examples(self, split: str | None, client_id: str) -> list[bytes]:
    """One client's serialized ``tf.train.Example`` rows, in TFF's order."""
    if self._indexed[split is not None]:
      # TFF's query, verbatim but for the bound parameters, so rows come back in TFF's order.
      if split is None:
        sql = 'SELECT serialized_example_proto FROM examples WHERE client_id = ?'
        args = (client_id,)
      else:
        sql = 'SELECT serialized_example_proto FROM examples WHERE client_id = ? and split_name = ?'
        args = (client_id, split)
      return [bytes(r[0]) for r in self._query(sql, args)]
    return self.serialized_examples_of(split, [client_id])[0]

  def _select_in(self, select: str, where: str, args: tuple, values: Sequence) -> list[tuple]:
    """``SELECT ... WHERE <where>column IN values``: the values as one JSON parameter (as bound
    parameters, 500 a query, where SQLite lacks JSON functions)."""
    rows: list[tuple] = []
    step = 50_000 if self._json else 500
    for start in range(0, len(values), step):
      chunk = list(values[start : start + step])
      if self._json:
        ids, params = '(SELECT value FROM json_each(?))', (json.dumps(chunk),)
      else:
        ids, params = f'({", ".join("?" * len(chunk))})', tuple(chunk)
      rows += self._query(f'{select} WHERE {where} IN {ids}', args + params)
    return rows

  def serialized_examples_of(
      self, split: str | None, client_ids: Sequence[str]
  ) -> list[list[bytes]]:
    """The rows of several clients, each in TFF's order, read in one query (through the index,
    or by row ids where the file has none)."""
    grouped: list[list[bytes]] = [[] for _ in client_ids]
    if self._indexed[split is not None]:
      position = {c: i for i, c in enumerate(client_ids)}
      where, args = ('split_name = ? AND client_id', (split,)) if split is not None else (
          'client_id', ())
      select = 'SELECT client_id, serialized_example_proto FROM examples'
      for client, blob in self._select_in(select, where, args, client_ids):
        grouped[position[str(client)]].append(bytes(blob))  # In index (insertion) order.
      return grouped
    index = self._rowid_index(split)
    wanted = [index.get(c, []) for c in client_ids]
    select = 'SELECT rowid, serialized_example_proto FROM examples'
    blobs = dict(self._select_in(select, 'rowid', (), [r for ids in wanted for r in ids]))
    return [[bytes(blobs[r]) for r in ids] for ids in wanted]

  def _decode(self, blobs, spec, postprocess, where) -> dict[str, np.ndarray]:
    try:
      arrays = tf_example_batch.parse_examples(blobs, spec, where)
    except (tf_example.ProtoDecodeError, tf_example.FeatureSpecError) as e:
      raise CorruptDatasetError(str(e)) from e
    return postprocess(arrays) if postprocess is not None else arrays

  def load(
      self,
      split: str | None,
      spec: Mapping[str, tf_example.FixedLenFeature],
      postprocess: _Postprocess | None,
      client_id: str,
  ) -> dict[str, np.ndarray]:
    """One client's examples decoded under ``spec`` (then ``postprocess``ed): ``{name: [n, ...]}``.

    Raises:
      CorruptDatasetError: a row is not a valid Example or does not fit ``spec``; the message names
        the file, split, client and example.
    """
    blobs = self.serialized_examples(split, client_id)
    where = lambda i: f'{self.path}, split {split!r}, client {client_id!r}, example {i}'
    return self._decode(blobs, spec, postprocess, where)

  def load_many(
      self,
      split: str | None,
      spec: Mapping[str, tf_example.FixedLenFeature],
      postprocess: _Postprocess | None,
      client_ids: Sequence[str],
  ) -> list[dict[str, np.ndarray]]:
    """Several clients' examples, as :meth:`load` gives each: one query, one decode of all rows.

    Raises:
      CorruptDatasetError: as :meth:`load`, naming the client and its example.
    """
    per_client = self.serialized_examples_of(split, client_ids)
    counts = np.fromiter(map(len, per_client), dtype=np.int64, count=len(per_client))
    offsets = np.concatenate(([0], np.cumsum(counts)))
    blobs = [blob for rows in per_client for blob in rows]

    def where(i: int) -> str:
      c = int(np.searchsorted(offsets, i, side='right')) - 1
      return (
          f'{self.path}, split {split!r}, client {client_ids[c]!r}, example {i - offsets[c]}'
      )

    arrays = self._decode(blobs, spec, None, where)
    out = []
    for c in range(len(client_ids)):
      part = {k: v[offsets[c] : offsets[c + 1]] for k, v in arrays.items()}
      out.append(postprocess(part) if postprocess is not None else part)
    return out

  def client_data(
      self,
      split: str | None,
      spec: Mapping[str, tf_example.FixedLenFeature],
      postprocess: _Postprocess | None = None,
  ) -> ClientData:
    """A lazy ClientData of ``split``: ids and sizes now, each client decoded when asked for.

    ``postprocess`` (picklable, e.g. a module-level function) maps a client's decoded arrays to
    what the source serves, e.g. casting TFF's int64 storage to its served dtype.
    """
    client_ids, sizes = self.clients(split)
    load = functools.partial(self.load, split, dict(spec), postprocess)
    load_many = functools.partial(self.load_many, split, dict(spec), postprocess)
    return ClientData.from_loader(client_ids, load, sizes=sizes, load_many=load_many)


def check_client_counts(path: str, expected: Mapping[str, int]) -> None:
  """That each split of the database at ``path`` has the expected number of clients.

  Raises:
    CorruptDatasetError: the file is unreadable, lacks TFF's schema, or a split's count differs.
  """
  reader = SqlReader(path)
  try:
    for split, count in expected.items():
      client_ids, _ = reader.clients(split)
      if len(client_ids) != count:
        raise CorruptDatasetError(
            f'{path}: split {split!r} has {len(client_ids)} clients; TFF\'s release has {count}.'
        )
  finally:
    reader.close()


def load_and_parse_sql_client_data(
    database_filepath: str | os.PathLike[str],
    element_spec: Mapping[str, tf_example.FixedLenFeature],
    split_name: str | None = None,
) -> ClientData:
  """TFF's ``sql_client_data_utils.load_and_parse_sql_client_data``: a ClientData of one split.

  Args:
    database_filepath: a SQLite file in TFF's SqlClientData schema.
    element_spec: ``{feature: FixedLenFeature(shape, dtype)}``, how each row's Example is parsed.
    split_name: the ``split_name`` to serve; None serves every row of each client.

  Returns:
    A lazy ClientData; each client's dataset is ``{feature: array[n, *shape]}``.

  Raises:
    FileNotFoundError: there is no file at ``database_filepath``.
    CorruptDatasetError: the file is damaged or not in TFF's schema, or the split has no clients.
  """
  path = os.path.abspath(os.fspath(database_filepath))
  if not os.path.isfile(path):
    raise FileNotFoundError(f'No such file: {path}')
  return handles.open_shared(SqlReader, path).client_data(split_name, element_spec)


def load_release(
    release: download.Release,
    cache_dir: str | os.PathLike[str] | None,
    *,
    name: str,
    what: str,
    splits: tuple[str, ...],
    spec: Mapping[str, tf_example.FixedLenFeature],
    postprocess: _Postprocess | None,
    num_clients: Mapping[str, int],
    allow_download: bool = True,
) -> tuple[ClientData, ...]:
  """The splits of one of TFF's published ``<name>.sqlite.lzma`` files, as lazy ClientData.

  Finds ``<cache_dir>/<name>.sqlite`` (or the ``.lzma`` placed there, or downloads it) through
  :func:`download.get_compressed_file`, checking a freshly decompressed file's schema and client
  counts (``num_clients``, ``{split: count}``) before it takes its final name.

  Raises:
    DatasetNotFoundError: not cached and not downloaded; the message names the file, where to put
      it and the URL.
    CorruptDatasetError: a cached file is damaged or not in TFF's schema.
  """
  directory = download.resolve_cache_dir(cache_dir, name)
  verify = functools.partial(check_client_counts, expected=dict(num_clients))
  path = download.get_compressed_file(
      release, directory, download=allow_download, verify=verify, what=what, name=name
  )
  try:
    reader = handles.open_shared(SqlReader, path)
  except CorruptDatasetError as e:
    raise CorruptDatasetError(f'{e} Or replace it with the decompressed {release.url}.') from None
  return tuple(reader.client_data(split, spec, postprocess) for split in splits)
