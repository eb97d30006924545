"""Tests for the TFF SqlClientData reader, on small files in TFF's schema built by tff_files.py."""

from __future__ import annotations

import pickle
import sqlite3

import numpy as np
import pytest
from tff_files import encode_example, write_sql_client_data

from fedjax_like.data.sources import (
    CorruptDatasetError,
    handles,
    sql_client_data,
    tf_example_batch,
)
from fedjax_like.data.sources.tf_example import FixedLenFeature

SPEC = {'n': FixedLenFeature((), 'int64'), 'text': FixedLenFeature((), 'string')}
# Ids whose sorted order ('10' < '2' < 'B' < 'a') differs from insertion order.
SIZES = {'train': {'2': 3, 'a': 1, '10': 4, 'B': 2}, 'test': {'2': 1, '10': 2}}


def rows_of(split: str, client: str, n: int) -> list[bytes]:
  return [
      encode_example({'n': ('int64', [i]), 'text': ('bytes', [f'{split}/{client}/{i}'.encode()])})
      for i in range(n)
  ]


@pytest.fixture(autouse=True)
def _close():
  yield
  handles.close_all()


@pytest.fixture(params=[True, False], ids=['indexed', 'no_index'])
def db(request, tmp_path):
  path = tmp_path / 'data.sqlite'
  rows = {s: {c: rows_of(s, c, n) for c, n in sizes.items()} for s, sizes in SIZES.items()}
  write_sql_client_data(path, rows, with_index=request.param)
  return str(path)


def test_ids_sorted_sizes_and_rows_in_order(db):
  train = sql_client_data.load_and_parse_sql_client_data(db, SPEC, 'train')
  assert train.client_ids == ['10', '2', 'B', 'a']
  assert train.client_sizes() == SIZES['train']
  elements = train.dataset_for_client('10').elements
  np.testing.assert_array_equal(elements['n'], [0, 1, 2, 3])
  assert elements['text'].tolist() == [b'train/10/0', b'train/10/1', b'train/10/2', b'train/10/3']
  test = sql_client_data.load_and_parse_sql_client_data(db, SPEC, 'test')
  assert test.client_ids == ['10', '2']
  assert test.dataset_for_client('2').elements['text'].tolist() == [b'test/2/0']


def test_no_split_serves_every_row_of_a_client(db):
  everything = sql_client_data.load_and_parse_sql_client_data(db, SPEC)
  assert everything.client_ids == ['10', '2', 'B', 'a']
  assert everything.client_sizes()['2'] == 4
  texts = everything.dataset_for_client('2').elements['text'].tolist()
  assert sorted(texts) == sorted([b'train/2/0', b'train/2/1', b'train/2/2', b'test/2/0'])


def test_reads_are_lazy_and_share_one_connection(db, monkeypatch):
  calls, connects = [], []
  parse, connect = tf_example_batch.parse_examples, sqlite3.connect
  monkeypatch.setattr(
      tf_example_batch, 'parse_examples', lambda b, *a: calls.append(len(b)) or parse(b, *a)
  )
  monkeypatch.setattr(sqlite3, 'connect', lambda *a, **k: connects.append(1) or connect(*a, **k))
  train = sql_client_data.load_and_parse_sql_client_data(db, SPEC, 'train')
  test = sql_client_data.load_and_parse_sql_client_data(db, SPEC, 'test')
  assert not calls and len(connects) == 1
  train.dataset_for_client('B')
  test.dataset_for_client('10')
  assert sum(calls) == 4 and len(connects) == 1


@pytest.mark.parametrize('split', ['train', None])
def test_a_cohort_is_read_in_one_query_and_matches_per_client_reads(db, split, monkeypatch):
  data = sql_client_data.load_and_parse_sql_client_data(db, SPEC, split)
  cohort = ['a', '10', 'B', '2']
  expected = [data.dataset_for_client(c) for c in cohort]
  reader = handles.open_shared(sql_client_data.SqlReader, db)
  queries = []
  query = reader._query
  monkeypatch.setattr(reader, '_query', lambda *a: queries.append(a[0]) or query(*a))
  got = data.datasets_for_clients(cohort)
  assert len(queries) == 1  # Through the index, or by row ids where the file has none.
  assert [d.client_id for d in got] == cohort
  for want, have in zip(expected, got, strict=True):
    np.testing.assert_array_equal(have.elements['n'], want.elements['n'])
    assert have.elements['text'].tolist() == want.elements['text'].tolist()
  monkeypatch.setattr(reader, '_json', False)  # SQLite without JSON functions: bound ids.
  again = data.datasets_for_clients(cohort)
  assert [d.elements['text'].tolist() for d in again] == [
      d.elements['text'].tolist() for d in expected
  ]
  prep = data.preprocess(lambda ds: ds.take(1))
  assert [len(d) for d in prep.datasets_for_clients(['10', 'a'])] == [1, 1]


def test_client_data_pickles_and_reopens(db):
  train = sql_client_data.load_and_parse_sql_client_data(db, SPEC, 'train')
  copy = pickle.loads(pickle.dumps(train))
  assert copy.dataset_for_client('a').elements['text'].tolist() == [b'train/a/0']


def test_unknown_split_lists_the_splits(db):
  message = r"no clients in split 'heldout'.*\['test', 'train'\]"
  with pytest.raises(CorruptDatasetError, match=message):
    sql_client_data.load_and_parse_sql_client_data(db, SPEC, 'heldout')


def test_row_that_does_not_fit_the_spec_names_file_client_and_example(db):
  con = sqlite3.connect(db)
  with con:
    con.execute(
        "UPDATE examples SET serialized_example_proto = ? WHERE rowid = (SELECT MAX(rowid) FROM "
        "examples WHERE client_id = '10' AND split_name = 'train')",
        (encode_example({'n': ('int64', [1])}),),
    )
  con.close()
  train = sql_client_data.load_and_parse_sql_client_data(db, SPEC, 'train')
  with pytest.raises(CorruptDatasetError, match="'text' should hold 1 bytes") as info:
    train.dataset_for_client('10')
  assert f"{db}, split 'train', client '10', example 3" in str(info.value)
  with pytest.raises(CorruptDatasetError, match="'text' should hold 1 bytes") as info:
    train.datasets_for_clients(['a', '2', '10', 'B'])
  assert f"{db}, split 'train', client '10', example 3" in str(info.value)


@pytest.mark.parametrize(
    'statement, message',
    [
        ('DROP TABLE client_metadata', r"lacks the tables \['client_metadata'\]"),
        ('ALTER TABLE examples DROP COLUMN serialized_example_proto',
         r"table examples lacks the columns \['serialized_example_proto'\]"),
        ('ALTER TABLE client_metadata RENAME COLUMN num_examples TO n',
         r"table client_metadata lacks the columns \['num_examples'\]"),
    ],
)
def test_schema_differences_name_the_table_or_column(tmp_path, statement, message):
  path = str(tmp_path / 'x.sqlite')
  write_sql_client_data(path, {'train': {'a': rows_of('train', 'a', 1)}}, with_index=False)
  con = sqlite3.connect(path)
  with con:
    con.execute(statement)
  con.close()
  with pytest.raises(CorruptDatasetError, match=message) as info:
    sql_client_data.load_and_parse_sql_client_data(path, SPEC, 'train')
  assert path in str(info.value)


def test_damaged_files_are_reported(tmp_path, db):
  data = open(db, 'rb').read()
  truncated = tmp_path / 'truncated.sqlite'
  truncated.write_bytes(data[: len(data) // 2])
  assert 'truncated' in sql_client_data.file_problem(str(truncated))
  with pytest.raises(CorruptDatasetError, match='truncated.*Delete it'):
    sql_client_data.load_and_parse_sql_client_data(truncated, SPEC, 'train')
  (tmp_path / 'empty.sqlite').write_bytes(b'')
  assert sql_client_data.file_problem(str(tmp_path / 'empty.sqlite')) == 'it is empty'
  (tmp_path / 'text.sqlite').write_bytes(b'hello' * 100)
  assert 'not an SQLite' in sql_client_data.file_problem(str(tmp_path / 'text.sqlite'))
  assert sql_client_data.file_problem(db) is None
  with pytest.raises(FileNotFoundError, match='missing.sqlite'):
    sql_client_data.load_and_parse_sql_client_data(tmp_path / 'missing.sqlite', SPEC)


def test_check_client_counts(db):
  sql_client_data.check_client_counts(db, {'train': 4, 'test': 2})
  with pytest.raises(CorruptDatasetError, match="split 'test' has 2 clients; TFF's release has 3"):
    sql_client_data.check_client_counts(db, {'train': 4, 'test': 3})
