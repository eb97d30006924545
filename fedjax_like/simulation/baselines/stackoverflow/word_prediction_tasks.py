"""TFF's StackOverflow next-word prediction task (``create_word_prediction_task``).

The goal is to predict each next word of a post's first ``sequence_length`` words; a client is a
StackOverflow user. The model is TFF's (embedding 96, LSTM 670, dense 96, dense V+B+3:
:func:`~fedjax_like.models.zoo.stackoverflow_word_lstm`) with its metrics ``num_tokens``,
``accuracy``, ``accuracy_without_out_of_vocab`` and
``accuracy_without_out_of_vocab_or_end_of_sentence``, all over real tokens only. Train data is the
``train`` split, test data ``test``, validation data ``heldout`` (as TFF). Evaluation clients are
batched 64 examples at a time and not shuffled unless ``eval_client_spec`` says otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from fedjax_like.data.client_data import ClientData
from fedjax_like.data.sources import stackoverflow
from fedjax_like.models.zoo import stackoverflow_word_lstm
from fedjax_like.simulation.baselines.baseline_task import BaselineTask, BaselineTaskDatasets
from fedjax_like.simulation.baselines.client_spec import ClientSpec
from fedjax_like.simulation.baselines.stackoverflow import word_prediction_preprocessing as prep


def create_word_prediction_task_from_datasets(
    train_client_spec: ClientSpec,
    eval_client_spec: ClientSpec | None,
    sequence_length: int,
    vocab: Sequence[str],
    num_out_of_vocab_buckets: int,
    train_data: ClientData,
    test_data: ClientData,
    validation_data: ClientData | None,
    loss_mask: str = 'inputs',
) -> BaselineTask:
  """The next-word task on the given data (raw StackOverflow examples with a ``tokens`` field).

  Args:
    train_client_spec: how training clients are preprocessed.
    eval_client_spec: how evaluation clients are (None: 1 epoch, batch 64, no shuffle).
    sequence_length: words per sequence (positive).
    vocab: the vocabulary, most frequent first.
    num_out_of_vocab_buckets: oov ids (positive).
    train_data, test_data, validation_data: the clients.
    loss_mask: the tokens the loss averages over (see
      :func:`~fedjax_like.models.metrics.sequence_loss_mask`; ``'inputs'`` is TFF's).
  """
  if sequence_length < 1:
    raise ValueError('sequence_length must be a positive integer')
  if len(vocab) < 1:
    raise ValueError('vocab must have length at least one')
  if num_out_of_vocab_buckets < 1:
    raise ValueError('num_out_of_vocab_buckets must be a positive integer')
  if eval_client_spec is None:
    eval_client_spec = ClientSpec(num_epochs=1, batch_size=64, shuffle_buffer_size=1)
  make = functools.partial(prep.create_preprocess_fn, vocab=list(vocab),
                           sequence_length=sequence_length,
                           num_out_of_vocab_buckets=num_out_of_vocab_buckets)
  datasets = BaselineTaskDatasets(
      train_data, test_data, validation_data, make(train_client_spec), make(eval_client_spec))
  model_fn = functools.partial(
      stackoverflow_word_lstm, vocab_size=len(vocab),
      num_out_of_vocab_buckets=num_out_of_vocab_buckets, sequence_length=sequence_length,
      loss_mask=loss_mask)
  return BaselineTask(datasets, model_fn)


def create_word_prediction_task(
    train_client_spec: ClientSpec,
    eval_client_spec: ClientSpec | None = None,
    sequence_length: int = prep.DEFAULT_SEQUENCE_LENGTH,
    vocab_size: int = prep.DEFAULT_WORD_VOCAB_SIZE,
    num_out_of_vocab_buckets: int = 1,
    cache_dir: str | None = None,
    download: bool = True,
    loss_mask: str = 'inputs',
) -> BaselineTask:
  """TFF's next-word task on federated StackOverflow (:mod:`fedjax_like.data.sources.
  stackoverflow`), with the ``vocab_size`` most frequent words of TFF's word counts.

  ``cache_dir`` and ``download`` are the source's; the other arguments as
  :func:`create_word_prediction_task_from_datasets`.
  """
  if vocab_size < 1:
    raise ValueError('vocab_size must be a positive integer')
  train, heldout, test = stackoverflow.load_data(cache_dir, download=download)
  counts = stackoverflow.load_word_counts(cache_dir, vocab_size=vocab_size, download=download)
  vocab = list(counts)[:vocab_size]
  return create_word_prediction_task_from_datasets(
      train_client_spec, eval_client_spec, sequence_length, vocab, num_out_of_vocab_buckets,
      train, test, heldout, loss_mask=loss_mask)
