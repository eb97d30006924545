"""TFF's StackOverflow next-word preprocessing, in NumPy, producing TFF's token arrays.

Follows ``tensorflow_federated/python/simulation/baselines/stackoverflow/
word_prediction_preprocessing.py``:

1. shuffle (default buffer 1,000; 1 keeps the stored order), repeat ``num_epochs``, take
   ``max_elements`` examples (:func:`~fedjax_like.simulation.baselines.client_spec.
   shuffle_repeat_take`);
2. each example's ``tokens`` (bytes) is split on single spaces (``tf.strings.split(sep=' ')``:
   two spaces in a row give an empty word, which is out of vocabulary) and cut to the first
   ``sequence_length`` words; word ``vocab[i]`` becomes ``i + 1``, any other word an
   out-of-vocabulary id ``V + 1 + bucket``; ``eos`` is appended only when fewer than
   ``sequence_length`` words remain, and ``bos`` put in front;
3. sequences are padded with 0 to ``sequence_length + 1`` (``padded_batch``), batched, and split
   into ``x = row[:-1]``, ``y = row[1:]`` (int64 ``[sequence_length]``).

Special tokens (:func:`get_special_tokens`): pad 0, words 1..V, oov V+1..V+B, bos V+B+1,
eos V+B+2.

**Out-of-vocabulary buckets.** TFF looks words up in a ``tf.lookup.StaticVocabularyTable``, whose
out-of-vocabulary words go to bucket ``Fingerprint64(word) % B`` (FarmHash's 64-bit fingerprint,
``tf.strings.to_hash_bucket_fast``). With TFF's default and the paper's ``B = 1`` every
out-of-vocabulary word is bucket 0 whatever the hash, so no hash is needed; with ``B > 1`` the
fingerprint of :mod:`.farmhash` is used.

Where this differs from TFF: the last batch of a client is padded to ``batch_size`` (all-pad rows,
masked) instead of being smaller, and shuffles are full seeded permutations (see
:mod:`~fedjax_like.simulation.baselines.client_spec`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fedjax_like.data.dataset import BatchedDataset, Dataset
from fedjax_like.models.zoo.stackoverflow import SpecialTokens, special_tokens
from fedjax_like.simulation.baselines.client_spec import ClientSpec, shuffle_repeat_take
from fedjax_like.simulation.baselines.stackoverflow import farmhash

DEFAULT_SEQUENCE_LENGTH = 20
DEFAULT_SHUFFLE_BUFFER_SIZE = 1000
DEFAULT_WORD_VOCAB_SIZE = 10000


def get_special_tokens(vocab_size: int, num_out_of_vocab_buckets: int = 1) -> SpecialTokens:
  """TFF's ``SpecialTokens(padding, out_of_vocab, beginning_of_sentence, end_of_sentence)``."""
  return special_tokens(vocab_size, num_out_of_vocab_buckets)


def _as_bytes(word) -> bytes:
  return word.encode('utf-8') if isinstance(word, str) else bytes(word)


def build_to_ids_fn(
    vocab: Sequence[str], max_sequence_length: int, num_out_of_vocab_buckets: int = 1
) -> Callable[[bytes], np.ndarray]:
  """``fn(tokens: bytes) -> int64[n]``: ``[bos, ids..., eos?]`` for one example (TFF's
  ``to_ids``, before padding)."""
  tokens = get_special_tokens(len(vocab), num_out_of_vocab_buckets)
  bos, eos, first_oov = tokens.beginning_of_sentence, tokens.end_of_sentence, len(vocab) + 1
  table = {_as_bytes(word): i + 1 for i, word in enumerate(vocab)}

  def oov_id(word: bytes) -> int:
    if num_out_of_vocab_buckets == 1:
      return first_oov
    return first_oov + farmhash.fingerprint64(word) % num_out_of_vocab_buckets

  def to_ids(sentence) -> np.ndarray:
    words = _as_bytes(sentence).split(b' ')[:max_sequence_length]
    ids = [table[w] if w in table else oov_id(w) for w in words]
    if len(ids) < max_sequence_length:
      ids.append(eos)
    return np.asarray([bos] + ids, dtype=np.int64)

  return to_ids


def to_sequences(sentences: Sequence, to_ids: Callable, sequence_length: int) -> np.ndarray:
  """int64 ``[n, sequence_length + 1]``: each sentence's ids padded with 0."""
  rows = np.zeros((len(sentences), sequence_length + 1), dtype=np.int64)
  for i, sentence in enumerate(sentences):
    ids = to_ids(sentence)
    rows[i, : len(ids)] = ids
  return rows


def create_preprocess_fn(
    preprocess_spec: ClientSpec,
    vocab: Sequence[str],
    sequence_length: int = DEFAULT_SEQUENCE_LENGTH,
    num_out_of_vocab_buckets: int = 1,
    seed=None,
) -> Callable[..., BatchedDataset]:
  """A function from a client's StackOverflow examples to its batched token sequences.

  Args:
    preprocess_spec: epochs, batch size, example cap and shuffle buffer (default 1,000).
    vocab: the words, most frequent first (``vocab[i]`` is token ``i + 1``).
    sequence_length: words per sequence (positive; TFF's 20).
    num_out_of_vocab_buckets: oov ids (positive; TFF's 1).
    seed: the shuffle's seed (None: fresh randomness each call).

  Returns:
    ``fn(dataset, seed=None) -> BatchedDataset`` (a call's ``seed`` replaces this one) with
    ``(x, y)`` int64 ``[num_batches, batch_size, sequence_length]``.

  Raises:
    ValueError: an empty vocabulary, or a non-positive length or bucket count.
  """
  if not vocab:
    raise ValueError('vocab must be non-empty.')
  if sequence_length < 1:
    raise ValueError('sequence_length must be a positive integer.')
  if num_out_of_vocab_buckets <= 0:
    raise ValueError('num_out_of_vocab_buckets must be a positive integer.')
  to_ids = build_to_ids_fn(vocab, sequence_length, num_out_of_vocab_buckets)
  buffer = preprocess_spec.shuffle_buffer_size or DEFAULT_SHUFFLE_BUFFER_SIZE

  def preprocess_fn(dataset: Dataset, seed=seed) -> BatchedDataset:
    sentences = Dataset({'tokens': np.asarray(dataset.elements['tokens'], dtype=object)})
    selected = shuffle_repeat_take(sentences, preprocess_spec, buffer, seed)
    rows = to_sequences(selected.elements['tokens'], to_ids, sequence_length)
    return Dataset((rows[:, :-1], rows[:, 1:]), client_id=dataset.client_id).batch(
        preprocess_spec.batch_size)

  return preprocess_fn
