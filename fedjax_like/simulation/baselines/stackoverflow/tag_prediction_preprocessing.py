"""TFF's StackOverflow tag-prediction preprocessing, in NumPy, producing TFF's arrays.

Follows ``tensorflow_federated/python/simulation/baselines/stackoverflow/
tag_prediction_preprocessing.py``:

1. shuffle (default buffer 1,000; 1 keeps the stored order), repeat, take ``max_elements``;
2. ``x``, float32 ``[len(word_vocab)]``: the text ``tokens + b' ' + title`` split on runs of
   whitespace (``tf.strings.split`` without a separator: ASCII space, tab, newline, vertical tab,
   form feed, carriage return), each in-vocabulary word counted at its index, divided by the
   number of in-vocabulary words (out-of-vocabulary words are dropped; all zeros when there are
   none, as ``divide_no_nan``);
3. ``y``, float32 ``[len(tag_vocab)]``: the ``tags`` split on ``'|'``, each in-vocabulary tag
   counted at its index (a multi-hot vector; a tag listed twice counts 2, as TFF's sum of
   one-hots; unknown and empty tags are dropped);
4. batched ``batch_size`` examples at a time (the last batch padded and masked here, smaller in
   TFF).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fedjax_like.data.dataset import BatchedDataset, Dataset
from fedjax_like.simulation.baselines.client_spec import ClientSpec, shuffle_repeat_take

DEFAULT_SHUFFLE_BUFFER_SIZE = 1000
DEFAULT_WORD_VOCAB_SIZE = 10000
DEFAULT_TAG_VOCAB_SIZE = 500


def _as_bytes(value) -> bytes:
  return value.encode('utf-8') if isinstance(value, str) else bytes(value)


def build_to_ids_fn(
    word_vocab: Sequence[str], tag_vocab: Sequence[str]
) -> Callable[[object, object, object], tuple[np.ndarray, np.ndarray]]:
  """``fn(tokens, title, tags) -> (bag_of_words float32[V], tags float32[T])`` for one example."""
  words = {_as_bytes(w): i for i, w in enumerate(word_vocab)}
  tag_ids = {_as_bytes(t): i for i, t in enumerate(tag_vocab)}

  def to_ids(tokens, title, tags) -> tuple[np.ndarray, np.ndarray]:
    x = np.zeros(len(words), np.float32)
    for word in (_as_bytes(tokens) + b' ' + _as_bytes(title)).split():  # bytes: ASCII spaces
      if word in words:
        x[words[word]] += 1.0
    total = x.sum()
    if total > 0:
      x /= total
    y = np.zeros(len(tag_ids), np.float32)
    for tag in _as_bytes(tags).split(b'|'):
      if tag in tag_ids:
        y[tag_ids[tag]] += 1.0
    return x, y

  return to_ids


def create_preprocess_fn(
    preprocess_spec: ClientSpec,
    word_vocab: Sequence[str],
    tag_vocab: Sequence[str],
    seed=None,
) -> Callable[..., BatchedDataset]:
  """A function from a client's StackOverflow examples to batched (bag of words, tags).

  Args:
    preprocess_spec: epochs, batch size, example cap and shuffle buffer (default 1,000).
    word_vocab: the words, most frequent first (TFF's top 10,000).
    tag_vocab: the tags, most frequent first (TFF's top 500).
    seed: the shuffle's seed (None: fresh randomness each call).

  Returns:
    ``fn(dataset, seed=None) -> BatchedDataset`` with ``x`` float32 ``[num_batches, batch_size,
    len(word_vocab)]`` and ``y`` float32 ``[..., len(tag_vocab)]``.
  """
  if not word_vocab:
    raise ValueError('word_vocab must be non-empty.')
  if not tag_vocab:
    raise ValueError('tag_vocab must be non-empty.')
  to_ids = build_to_ids_fn(word_vocab, tag_vocab)
  buffer = preprocess_spec.shuffle_buffer_size or DEFAULT_SHUFFLE_BUFFER_SIZE

  def preprocess_fn(dataset: Dataset, seed=seed) -> BatchedDataset:
    fields = {k: np.asarray(dataset.elements[k], dtype=object) for k in ('tokens', 'title', 'tags')}
    selected = shuffle_repeat_take(Dataset(fields), preprocess_spec, buffer, seed).elements
    x = np.zeros((len(selected['tokens']), len(word_vocab)), np.float32)
    y = np.zeros((len(selected['tokens']), len(tag_vocab)), np.float32)
    examples = zip(selected['tokens'], selected['title'], selected['tags'], strict=True)
    for i, example in enumerate(examples):
      x[i], y[i] = to_ids(*example)
    return Dataset((x, y), client_id=dataset.client_id).batch(preprocess_spec.batch_size)

  return preprocess_fn
