"""Tests for federated StackOverflow and its side files, on tiny files in TFF's formats."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
from tff_files import encode_example, write_sql_client_data

from fedjax_like.data.sources import CorruptDatasetError, DatasetNotFoundError, download, handles
from fedjax_like.data.sources import stackoverflow

FEATURES = ('creation_date', 'score', 'tags', 'title', 'tokens', 'type')
# TFF's synthetic examples, spread over the three splits.
EXAMPLES = {
    'train': {
        '00001': [
            (b'2010-01-08 09:34:05 UTC', 172, b'sql|sql-server|median', b'median in sql server',
             b"if you're using sql 2005 or better this is a nice ,", b'answer'),
            (b'2008-08-10 08:28:52.1 UTC', -3, b'css|css3', b'rounded corners using css',
             b'css3 does finally define the', b'question'),
        ],
        '0002': [(b'2008-08-05 19:01:55.2 UTC', 3, b'git|svn', b'version control', b'edit :',
                  b'answer')],
    },
    'heldout': {'10': [(b'2008-10-30 16:49:26.9 UTC', 1, b'vb . net|yield', b'iterator pattern',
                        b'thanks .', b'answer')]},
    'test': {
        '00001': [(b'2018-02-01 00:00:00 UTC', 0, b'sql', b't', b'the spec is available here .',
                   b'question')],
    },
}
WORDS = [('.', 4), ('is', 3), ('a', 3), (':', 3), ("you're", 1), ('<URL>', 1)]
TAGS = {'sql': 1, 'css': 2, 'git': 1, 'android': 2, 'yield': 5}


def write_db(path) -> None:
  def encode(values):
    return encode_example({
        name: ('int64', [value]) if name == 'score' else ('bytes', [value])
        for name, value in zip(FEATURES, values, strict=True)
    })

  write_sql_client_data(
      path, {s: {c: [encode(v) for v in ex] for c, ex in cl.items()} for s, cl in EXAMPLES.items()}
  )


def tar_bz2(member: str, content: bytes) -> bytes:
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode='w:bz2') as tar:
    info = tarfile.TarInfo(member)
    info.size = len(content)
    tar.addfile(info, io.BytesIO(content))
  return buffer.getvalue()


WORD_FILE = ''.join(f'{w} {c}\n' for w, c in WORDS).encode()
WORD_TAR = tar_bz2('stackoverflow.word_count', WORD_FILE)
TAG_TAR = tar_bz2('stackoverflow.tag_count', json.dumps(TAGS).encode())


@pytest.fixture(autouse=True)
def offline(monkeypatch):
  def no_network(url, start=0):
    pytest.fail(f'test tried to use the network: {url}')

  monkeypatch.setattr(download, '_open_url', no_network)
  monkeypatch.setattr(stackoverflow, '_NUM_CLIENTS', {'train': 2, 'heldout': 1, 'test': 1})
  for name, data in (('_WORD_COUNTS', WORD_TAR), ('_TAG_COUNTS', TAG_TAR)):
    release = getattr(stackoverflow, name)
    digest = hashlib.sha256(data).hexdigest()
    monkeypatch.setattr(stackoverflow, name, download.Release(release.url, sha256=digest))
  yield
  handles.close_all()


def test_three_splits_with_tff_names_order_and_dtypes(tmp_path):
  write_db(tmp_path / 'stackoverflow.sqlite')
  train, heldout, test = stackoverflow.load_data(cache_dir=tmp_path, download=False)
  assert train.client_ids == ['00001', '0002'] and heldout.client_ids == ['10']
  assert test.client_ids == ['00001']
  for data, split in ((train, 'train'), (heldout, 'heldout'), (test, 'test')):
    for client, rows in EXAMPLES[split].items():
      elements = data.dataset_for_client(client).elements
      assert list(elements) == list(FEATURES)
      assert elements['score'].dtype == np.int64
      for i, name in enumerate(FEATURES):
        assert elements[name].shape == (len(rows),)
        assert elements[name].tolist() == [r[i] for r in rows]
        if name != 'score':
          assert elements[name].dtype == object


def test_offline_error_names_the_database(tmp_path):
  with pytest.raises(DatasetNotFoundError, match='stackoverflow.sqlite.lzma') as info:
    stackoverflow.load_data(cache_dir=tmp_path, download=False)
  assert str(tmp_path / 'stackoverflow.sqlite') in str(info.value)


@pytest.mark.parametrize('subdir', ['', 'datasets'])
def test_word_and_tag_counts_from_archives(tmp_path, subdir):
  (tmp_path / subdir).mkdir(exist_ok=True)
  (tmp_path / subdir / 'stackoverflow.word_count.tar.bz2').write_bytes(WORD_TAR)
  (tmp_path / subdir / 'stackoverflow.tag_count.tar.bz2').write_bytes(TAG_TAR)
  counts = stackoverflow.load_word_counts(cache_dir=tmp_path)
  assert list(counts.items()) == WORDS  # File order, not re-sorted.
  assert list(stackoverflow.load_word_counts(tmp_path, vocab_size=3)) == ['.', 'is', 'a']
  assert list(stackoverflow.load_word_counts(tmp_path, vocab_size=100).items()) == WORDS
  tags = stackoverflow.load_tag_counts(cache_dir=tmp_path)
  # Decreasing count; ties keep the file's order (a stable sort, as TFF's).
  assert list(tags.items()) == [('yield', 5), ('css', 2), ('android', 2), ('sql', 1), ('git', 1)]
  assert (tmp_path / 'stackoverflow.word_count').read_bytes() == WORD_FILE


def test_extracted_side_file_in_tff_layout_is_used_as_is(tmp_path):
  (tmp_path / 'datasets').mkdir()
  (tmp_path / 'datasets' / 'stackoverflow.word_count').write_text('x 9\ny 2\n')
  assert stackoverflow.load_word_counts(tmp_path, download=False) == {'x': 9, 'y': 2}


def test_vocab_size_is_checked(tmp_path):
  with pytest.raises(TypeError):
    stackoverflow.load_word_counts(tmp_path, vocab_size=2.0)
  with pytest.raises(ValueError, match='positive'):
    stackoverflow.load_word_counts(tmp_path, vocab_size=0)


def test_side_file_errors(tmp_path):
  with pytest.raises(DatasetNotFoundError) as info:
    stackoverflow.load_tag_counts(tmp_path, download=False)
  assert str(tmp_path / 'stackoverflow.tag_count') in str(info.value)
  assert stackoverflow._TAG_COUNTS.url in str(info.value)
  (tmp_path / 'stackoverflow.word_count.tar.bz2').write_bytes(TAG_TAR)  # The wrong archive.
  with pytest.raises(CorruptDatasetError, match='SHA-256'):
    stackoverflow.load_word_counts(tmp_path)
  (tmp_path / 'stackoverflow.word_count').write_text('good 1\nbad line here\n')
  with pytest.raises(CorruptDatasetError, match='line 2'):
    stackoverflow.load_word_counts(tmp_path)
  (tmp_path / 'stackoverflow.tag_count').write_text('[1, 2]')
  with pytest.raises(CorruptDatasetError, match='not a tag count file'):
    stackoverflow.load_tag_counts(tmp_path)


def test_side_file_download_is_verified_extracted_and_cleaned_up(tmp_path, monkeypatch):
  class Response(io.BytesIO):
    status = 200

    def __init__(self, data):
      super().__init__(data)
      self.headers = {'Content-Length': str(len(data))}

  urls = []
  monkeypatch.setattr(
      download, '_open_url', lambda url, start=0: urls.append(url) or Response(WORD_TAR)
  )
  assert list(stackoverflow.load_word_counts(tmp_path / 'c').items()) == WORDS
  assert urls == [stackoverflow._WORD_COUNTS.url]
  assert sorted(p.name for p in (tmp_path / 'c').iterdir()) == ['stackoverflow.word_count']
