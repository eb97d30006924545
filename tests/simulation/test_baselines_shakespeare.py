"""Tests for TFF's Shakespeare character-prediction preprocessing, against a plain Python
re-derivation of TFF's tf.data pipeline written here."""

from __future__ import annotations

import numpy as np
import pytest

from fedjax_like.data import ClientData, Dataset
from fedjax_like.simulation.baselines import ClientSpec, shakespeare
from fedjax_like.simulation.baselines.shakespeare import char_prediction_preprocessing as prep

VOCAB = 'dhlptx@DHLPTX $(,048cgkoswCGKOSW[_#\'/37;?bfjnrvzBFJNRVZ"&*.26:\naeimquyAEIMQUY]!%)-159\r'


def reference(snippets, batch_size, sequence_length, num_epochs=1, max_elements=None):
  """TFF's pipeline without shuffling, step by step in plain Python: a list of (x, y) batches,
  each a list of rows (the last batch may be short, as tf.data's batch leaves it)."""
  snippets = list(snippets) * num_epochs
  if max_elements is not None:
    snippets = snippets[:max_elements]
  tokens = []
  for snippet in snippets:
    ids = [88]
    for byte in snippet:  # tf.strings.bytes_split: one token per UTF-8 byte.
      char = chr(byte)
      ids.append(VOCAB.index(char) + 1 if char in VOCAB else 87)
    ids.append(89)
    while len(ids) % (sequence_length + 1):
      ids.append(0)
    tokens += ids  # unbatch()
  rows = [tokens[i : i + sequence_length + 1] for i in range(0, len(tokens), sequence_length + 1)]
  batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
  return [([r[:-1] for r in b], [r[1:] for r in b]) for b in batches]


def assert_same(batched, expected, batch_size, sequence_length):
  x, y = batched.batches
  assert x.dtype == np.int64 and y.dtype == np.int64
  assert x.shape == (len(expected), batch_size, sequence_length) == y.shape
  for i, (ex, ey) in enumerate(expected):
    n = len(ex)
    assert batched.mask[i].tolist() == [True] * n + [False] * (batch_size - n)
    np.testing.assert_array_equal(x[i, :n], ex)
    np.testing.assert_array_equal(y[i, :n], ey)
    assert not x[i, n:].any() and not y[i, n:].any()  # Padding rows are pad tokens.


SNIPPETS = [
    b'Hark!',
    b"My name's Macbeth.\nBut now, my lord.\r\n",
    'Caf\u00e9 \u2014 fin'.encode(),  # Non-ASCII: each UTF-8 byte is an oov token.
    b'',
    b'x' * 79,  # With bos and eos exactly 81 tokens: no padding.
    b'[Within.] I do beseech you, ' * 7,  # Several rows.
    b'~`{}|<>+=^\t',  # Printable ASCII outside the vocabulary.
]


def test_tff_constants():
  assert prep.CHAR_VOCAB == list(VOCAB) and len(VOCAB) == 86
  assert shakespeare.get_special_tokens() == (0, 87, 88, 89)
  assert shakespeare.VOCAB_LENGTH == 90 and shakespeare.DEFAULT_SEQUENCE_LENGTH == 80


@pytest.mark.parametrize('batch_size, sequence_length', [(4, 80), (3, 5), (1, 1)])
def test_matches_tff_pipeline_without_shuffle(batch_size, sequence_length):
  spec = ClientSpec(num_epochs=1, batch_size=batch_size, shuffle_buffer_size=1)
  dataset = Dataset({'snippets': np.array(SNIPPETS, dtype=object)}, client_id='c')
  batched = shakespeare.create_preprocess_fn(spec, sequence_length)(dataset)
  assert batched.client_id == 'c'
  expected = reference(SNIPPETS, batch_size, sequence_length)
  assert_same(batched, expected, batch_size, sequence_length)


def test_repeat_then_take_counts_snippets_after_the_repeat():
  spec = ClientSpec(num_epochs=3, batch_size=2, max_elements=8, shuffle_buffer_size=1)
  dataset = Dataset({'snippets': np.array(SNIPPETS[:3], dtype=object)})
  batched = shakespeare.create_preprocess_fn(spec, 10)(dataset)
  assert_same(batched, reference(SNIPPETS[:3], 2, 10, num_epochs=3, max_elements=8), 2, 10)


def test_special_tokens_and_padding_by_hand():
  tokens = prep.to_tokens_and_pad(b'dh\xc3', split_length=6)
  assert tokens.tolist() == [88, 1, 2, 87, 89, 0]
  assert prep.to_tokens_and_pad('\r', split_length=3).tolist() == [88, 86, 89]


def test_shuffle_is_seeded_and_reshuffles_each_epoch():
  snippets = np.array([bytes([ord('a') + i]) for i in range(20)], dtype=object)
  spec = ClientSpec(num_epochs=2, batch_size=50)  # Default buffer: shuffled.
  dataset = Dataset({'snippets': snippets})
  first = shakespeare.create_preprocess_fn(spec, 2, seed=3)(dataset)
  again = shakespeare.create_preprocess_fn(spec, 2, seed=3)(dataset)
  np.testing.assert_array_equal(first.batches[0], again.batches[0])
  chars = first.batches[0][first.mask][:, 1]  # Each 3-token row is [bos, char, eos].
  epoch1, epoch2 = chars[:20], chars[20:]
  assert sorted(epoch1.tolist()) == sorted(epoch2.tolist())
  assert epoch1.tolist() != epoch2.tolist()
  unshuffled = prep.to_sequences(snippets, 2)[:, 1]
  assert sorted(epoch1.tolist()) == sorted(unshuffled.tolist())
  assert epoch1.tolist() != unshuffled.tolist()


def test_as_client_data_preprocessing():
  clients = ClientData.from_clients_dict(
      {'A': {'snippets': np.array([b'Hark!'], dtype=object)},
       'B': {'snippets': np.array([b'When?', b'No.'], dtype=object)}}
  )
  fn = shakespeare.create_preprocess_fn(ClientSpec(1, 2, shuffle_buffer_size=1), 80)
  batched = clients.preprocess(fn).dataset_for_client('B')
  assert_same(batched, reference([b'When?', b'No.'], 2, 80), 2, 80)


def test_bad_arguments():
  with pytest.raises(ValueError, match='sequence_length'):
    shakespeare.create_preprocess_fn(ClientSpec(1, 1), sequence_length=0)
  with pytest.raises(ValueError, match='batch_size must be positive'):
    ClientSpec(num_epochs=1, batch_size=0)
  with pytest.raises(TypeError, match='max_elements'):
    ClientSpec(1, 1, max_elements=2.5)
  with pytest.raises(ValueError, match='shuffle_buffer_size'):
    ClientSpec(1, 1, shuffle_buffer_size=-1)
