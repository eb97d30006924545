"""TFF's Shakespeare next-character preprocessing, in NumPy, producing TFF's token arrays.

Follows ``tensorflow_federated/python/simulation/baselines/shakespeare/
char_prediction_preprocessing.py``:

1. shuffle (unless ``shuffle_buffer_size`` is 1), repeat ``num_epochs`` times, take
   ``max_elements`` snippets (:func:`~fedjax_like.simulation.baselines.client_spec.
   shuffle_repeat_take`);
2. each snippet is split into its UTF-8 **bytes** (``tf.strings.bytes_split``; a non-ASCII
   character is several bytes, each out of vocabulary); a byte that is character ``i`` of
   :data:`CHAR_VOCAB` becomes token ``i + 1``, any other byte the oov token; ``bos`` is put in front
   and ``eos`` at the end, and the snippet is padded with 0 on its own to a multiple of
   ``sequence_length + 1`` tokens;
3. all snippets' tokens are cut into rows of ``sequence_length + 1`` (a row never spans two
   snippets), rows are batched ``batch_size`` at a time, and each row gives
   ``x = row[:-1]``, ``y = row[1:]`` (int64).

Special tokens (:func:`get_special_tokens`): pad 0, oov 87, bos 88, eos 89; 90 ids in all.

Where this differs from TFF: TFF's last batch of a client is smaller; here it is padded to
``batch_size`` with all-zero (pad) rows and marked False in the :class:`BatchedDataset` mask.
A shuffle here is a full permutation per epoch, seeded (TF's buffered shuffle is not emulated;
with ``shuffle_buffer_size=1`` both keep the stored order, and the arrays are TFF's exactly).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedjax_like.data.dataset import BatchedDataset, Dataset
from fedjax_like.simulation.baselines.client_spec import ClientSpec, shuffle_repeat_take

DEFAULT_SEQUENCE_LENGTH = 80  # From McMahan et al., AISTATS 2017.
# TFF's vocabulary, in TFF's order: character CHAR_VOCAB[i] is token i + 1.
CHAR_VOCAB = list(
    'dhlptx@DHLPTX $(,048cgkoswCGKOSW[_#\'/37;?bfjnrvzBFJNRVZ"&*.26:\naeimquyAEIMQUY]!%)-159\r'
)
DEFAULT_SHUFFLE_BUFFER_SIZE = 50


def get_special_tokens() -> tuple[int, int, int, int]:
  """``(pad, oov, bos, eos)`` = ``(0, 87, 88, 89)``."""
  vocab_size = len(CHAR_VOCAB)
  return 0, vocab_size + 1, vocab_size + 2, vocab_size + 3


def _byte_table() -> np.ndarray:
  """int64 ``[256]``: the token of each byte value (oov for bytes outside the vocabulary)."""
  _, oov, _, _ = get_special_tokens()
  table = np.full(256, oov, dtype=np.int64)
  for i, char in enumerate(CHAR_VOCAB):
    table[ord(char)] = i + 1  # Reserve 0 for pad.
  return table


_TABLE = _byte_table()


def to_tokens_and_pad(snippet: bytes | str, split_length: int) -> np.ndarray:
  """One snippet's int64 tokens: ``[bos, *chars, eos]`` padded with 0 to a multiple of
  ``split_length``."""
  if isinstance(snippet, str):
    snippet = snippet.encode('utf-8')
  _, _, bos, eos = get_special_tokens()
  chars = _TABLE[np.frombuffer(bytes(snippet), dtype=np.uint8)]
  length = chars.size + 2
  tokens = np.zeros(length + (-length) % split_length, dtype=np.int64)
  tokens[0], tokens[1 : length - 1], tokens[length - 1] = bos, chars, eos
  return tokens


def to_sequences(snippets: np.ndarray, sequence_length: int) -> np.ndarray:
  """int64 ``[num_rows, sequence_length + 1]``: every snippet's padded tokens, cut into rows."""
  split_length = sequence_length + 1
  if len(snippets) == 0:
    return np.zeros((0, split_length), dtype=np.int64)
  tokens = np.concatenate([to_tokens_and_pad(s, split_length) for s in snippets])
  return tokens.reshape(-1, split_length)


def create_preprocess_fn(
    preprocess_spec: ClientSpec,
    sequence_length: int = DEFAULT_SEQUENCE_LENGTH,
    seed: int | None = None,
) -> Callable[[Dataset], BatchedDataset]:
  """A function from a client's ``{'snippets': object[n]}`` dataset to its batched sequences.

  Args:
    preprocess_spec: epochs, batch size, snippet cap and shuffle buffer
      (default :data:`DEFAULT_SHUFFLE_BUFFER_SIZE`; 1 keeps the stored order).
    sequence_length: tokens per input row (positive); rows hold ``sequence_length + 1`` tokens
      before the input/target split.
    seed: the shuffle's seed (None: fresh randomness each call).

  Returns:
    ``fn(dataset, seed=None) -> BatchedDataset`` (a ``seed`` given to the call replaces the one
    given here) whose ``batches`` are ``(x, y)``, both int64
    ``[num_batches, batch_size, sequence_length]``, with ``mask[num_batches, batch_size]``
    False on the padding rows of the last batch.

  Raises:
    ValueError: ``sequence_length`` is not positive.
  """
  if sequence_length < 1:
    raise ValueError('sequence_length must be a positive integer.')
  shuffle_buffer_size = preprocess_spec.shuffle_buffer_size
  if shuffle_buffer_size is None:
    shuffle_buffer_size = DEFAULT_SHUFFLE_BUFFER_SIZE

  def preprocess_fn(dataset: Dataset, seed=seed) -> BatchedDataset:
    snippets = Dataset({'snippets': np.asarray(dataset.elements['snippets'], dtype=object)})
    selected = shuffle_repeat_take(snippets, preprocess_spec, shuffle_buffer_size, seed)
    rows = to_sequences(selected.elements['snippets'], sequence_length)
    sequences = Dataset((rows[:, :-1], rows[:, 1:]), client_id=dataset.client_id)
    return sequences.batch(preprocess_spec.batch_size)

  return preprocess_fn
