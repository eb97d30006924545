"""Tests for federated Shakespeare, on a tiny file in TFF's exact schema built here."""

from __future__ import annotations

import lzma

import numpy as np
import pytest
from tff_files import encode_example, write_sql_client_data

from fedjax_like.data.sources import DatasetNotFoundError, download, handles, shakespeare

# Role ids as TFF spells them; sorted() puts upper case first.
SNIPPETS = {
    'train': {
        'THE_TRAGEDY_OF_KING_LEAR_MACBETH': [b'Hark!', b'When?', b"My name's Macbeth."],
        'MUCH_ADO_ABOUT_NOTHING_EMILIA': [b'Never.', b'But now, my lord.'],
        'ALLS_WELL_THAT_ENDS_WELL_Clown': ['Caf\u00e9 \u2014 ok'.encode()],
    },
    'test': {
        'THE_TRAGEDY_OF_KING_LEAR_MACBETH': [b'No, nor more fearful.'],
        'MUCH_ADO_ABOUT_NOTHING_EMILIA': [b'[Within.] I do beseech you'],
        'ALLS_WELL_THAT_ENDS_WELL_Clown': [b''],
    },
}


def write(path) -> None:
  rows = {
      split: {c: [encode_example({'snippets': ('bytes', [s])}) for s in texts]
              for c, texts in clients.items()}
      for split, clients in SNIPPETS.items()
  }
  write_sql_client_data(path, rows)


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
  def no_network(url, start=0):
    pytest.fail(f'test tried to use the network: {url}')

  monkeypatch.setattr(download, '_open_url', no_network)
  monkeypatch.setenv('FEDJAX_LIKE_CACHE', str(tmp_path / 'env_cache'))
  monkeypatch.setattr(shakespeare, '_NUM_CLIENTS', {'train': 3, 'test': 3})
  yield
  handles.close_all()


def check(train, test) -> None:
  for data, split in ((train, 'train'), (test, 'test')):
    assert data.client_ids == sorted(SNIPPETS[split])
    assert data.client_sizes() == {c: len(s) for c, s in SNIPPETS[split].items()}
    for client, texts in SNIPPETS[split].items():
      elements = data.dataset_for_client(client).elements
      assert list(elements) == ['snippets']
      assert elements['snippets'].dtype == object and elements['snippets'].shape == (len(texts),)
      assert elements['snippets'].tolist() == texts
  spec = train.element_spec['snippets']
  assert spec.shape == () and spec.dtype == np.dtype(object)


def test_uncompressed_sqlite_in_cache(tmp_path):
  write(tmp_path / 'shakespeare.sqlite')
  check(*shakespeare.load_data(cache_dir=tmp_path, download=False))


def test_lzma_in_default_cache_and_tff_signature(tmp_path):
  build = tmp_path / 'build.sqlite'
  write(build)
  cache = tmp_path / 'env_cache' / 'shakespeare'
  cache.mkdir(parents=True)
  (cache / 'shakespeare.sqlite.lzma').write_bytes(
      lzma.compress(build.read_bytes(), format=lzma.FORMAT_ALONE)
  )
  check(*shakespeare.load_data())  # TFF's call: load_data(cache_dir=None).


def test_download_verifies_client_counts(tmp_path, monkeypatch):
  build = tmp_path / 'build.sqlite'
  write(build)
  payload = lzma.compress(build.read_bytes(), format=lzma.FORMAT_ALONE)

  class Response:
    status, headers = 200, {'Content-Length': str(len(payload))}

    def __init__(self):
      self._left = payload

    def read(self, n):
      chunk, self._left = self._left[:n], self._left[n:]
      return chunk

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      return False

  urls = []
  monkeypatch.setattr(download, '_open_url', lambda url, start=0: urls.append(url) or Response())
  monkeypatch.setattr(shakespeare, '_NUM_CLIENTS', {'train': 715, 'test': 715})
  message = "split 'train' has 3 clients; TFF's release has 715"
  with pytest.raises(DatasetNotFoundError, match=message):
    shakespeare.load_data(cache_dir=tmp_path / 'c')
  assert urls == [download.BASE_URL + 'shakespeare.sqlite.lzma']
  assert sorted(p.name for p in (tmp_path / 'c').iterdir()) == []
  monkeypatch.setattr(shakespeare, '_NUM_CLIENTS', {'train': 3, 'test': 3})
  check(*shakespeare.load_data(cache_dir=tmp_path / 'c'))
  assert sorted(p.name for p in (tmp_path / 'c').iterdir()) == ['shakespeare.sqlite']


def test_offline_error_names_the_file_and_url(tmp_path):
  with pytest.raises(DatasetNotFoundError) as info:
    shakespeare.load_data(cache_dir=tmp_path, download=False)
  message = str(info.value)
  assert str(tmp_path / 'shakespeare.sqlite') in message
  assert 'https://storage.googleapis.com/tff-datasets-public/shakespeare.sqlite.lzma' in message


def test_a_file_of_another_dataset_is_reported(tmp_path):
  write_sql_client_data(
      tmp_path / 'shakespeare.sqlite', {'train': {'a': [encode_example({'x': ('int64', [1])})]}}
  )
  with pytest.raises(DatasetNotFoundError, match=r"no clients in split 'test'.*\['train'\]"):
    shakespeare.load_data(cache_dir=tmp_path, download=False)
