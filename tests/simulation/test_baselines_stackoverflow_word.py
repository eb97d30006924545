"""TFF's StackOverflow next-word preprocessing (simulation/baselines/stackoverflow/
word_prediction_preprocessing.py) against a plain-Python re-derivation of TFF's tf.data pipeline."""

import numpy as np
import pytest

from fedjax_like.data import Dataset
from fedjax_like.simulation.baselines import ClientSpec
from fedjax_like.simulation.baselines.stackoverflow import farmhash
from fedjax_like.simulation.baselines.stackoverflow import word_prediction_preprocessing as prep

VOCAB = ['the', 'a', 'is', 'to', 'in']


def split_on_single_spaces(text: bytes):
  """tf.strings.split(sep=' '): every single space separates, so '' appears between doubles."""
  words, current = [], b''
  for byte in text:
    if byte == ord(' '):
      words.append(current)
      current = b''
    else:
      current += bytes([byte])
  return words + [current]


def reference(sentences, length, buckets=1):
  """TFF's to_ids, padded_batch and split, one sentence at a time: a list of (x, y) rows."""
  vocab = len(VOCAB)
  bos, eos = vocab + buckets + 1, vocab + buckets + 2
  rows = []
  for text in sentences:
    ids = []
    for word in split_on_single_spaces(text)[:length]:
      if word.decode() in VOCAB:
        ids.append(VOCAB.index(word.decode()) + 1)
      else:
        ids.append(vocab + 1 + farmhash.fingerprint64(word) % buckets)
    if len(ids) < length:
      ids.append(eos)
    row = [bos] + ids + [0] * (length + 1 - 1 - len(ids))
    rows.append((row[:-1], row[1:]))
  return rows


SENTENCES = [
    b'the cat is in the hat',  # oov 'cat', 'hat'; eos
    b'the a is to in the a is',  # exactly 8 words: no eos at length 8
    b'a a a a a a a a a a a a',  # truncated to 8 words, no eos
    b'to  be',  # a double space: an empty word, out of vocabulary
    b' in',  # a leading space: an empty first word
    b'',  # one empty word
]


@pytest.mark.parametrize('batch_size', [1, 4])
def test_matches_tff_pipeline(batch_size):
  spec = ClientSpec(num_epochs=1, batch_size=batch_size, shuffle_buffer_size=1)
  fn = prep.create_preprocess_fn(spec, VOCAB, sequence_length=8)
  batched = fn(Dataset({'tokens': np.array(SENTENCES, dtype=object)}, client_id='u'))
  x, y = batched.batches
  assert x.dtype == np.int64 and y.dtype == np.int64 and x.shape[1:] == (batch_size, 8)
  expected = reference(SENTENCES, 8)
  real_x, real_y = x[batched.mask], y[batched.mask]
  assert len(real_x) == len(SENTENCES) and batched.client_id == 'u'
  for (ex, ey), gx, gy in zip(expected, real_x, real_y, strict=True):
    assert gx.tolist() == ex and gy.tolist() == ey
  assert not x[~batched.mask].any()


def test_special_tokens_by_hand():
  assert prep.get_special_tokens(10000) == (0, [10001], 10002, 10003)
  assert prep.get_special_tokens(5, 3).get_number_of_special_tokens() == 6
  to_ids = prep.build_to_ids_fn(VOCAB, 3)
  assert to_ids(b'is cat').tolist() == [7, 3, 6, 8]  # bos 7, 'is' 3, oov 6, eos 8
  assert to_ids(b'the a is to').tolist() == [7, 1, 2, 3]  # three words kept, no eos


def test_several_oov_buckets_hash_words_with_farmhash():
  sentences = [b'zebra quokka the emu ibis yak']
  got = prep.create_preprocess_fn(ClientSpec(1, 2, shuffle_buffer_size=1), VOCAB, 10, 4)(
      Dataset({'tokens': np.array(sentences, dtype=object)}))
  (ex, ey), = reference(sentences, 10, buckets=4)
  assert got.batches[0][0, 0].tolist() == ex and got.batches[1][0, 0].tolist() == ey
  oov = [i for i in ex if 6 <= i <= 9]
  assert len(set(oov)) > 1  # The words spread over the buckets.


def test_shuffle_repeat_take_and_seed():
  sentences = np.array([f'w{i}'.encode() for i in range(30)], dtype=object)
  spec = ClientSpec(num_epochs=2, batch_size=100, max_elements=45)
  fn = prep.create_preprocess_fn(spec, [f'w{i}' for i in range(30)], sequence_length=1)
  first = fn(Dataset({'tokens': sentences}), seed=7)
  again = fn(Dataset({'tokens': sentences}), seed=7)
  np.testing.assert_array_equal(first.batches[0], again.batches[0])
  words = first.batches[1][first.mask][:, 0] - 1  # y = [word]: the word's index.
  assert len(words) == 45
  assert sorted(words[:30].tolist()) == list(range(30)) and words[:30].tolist() != list(range(30))
  assert len(set(words[30:].tolist())) == 15  # The second epoch's start: distinct examples.


def test_bad_arguments():
  spec = ClientSpec(1, 1)
  with pytest.raises(ValueError, match='vocab must be non-empty'):
    prep.create_preprocess_fn(spec, [])
  with pytest.raises(ValueError, match='sequence_length'):
    prep.create_preprocess_fn(spec, VOCAB, sequence_length=0)
  with pytest.raises(ValueError, match='num_out_of_vocab_buckets'):
    prep.create_preprocess_fn(spec, VOCAB, num_out_of_vocab_buckets=0)
