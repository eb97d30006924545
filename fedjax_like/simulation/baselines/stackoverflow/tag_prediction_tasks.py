"""TFF's StackOverflow tag prediction task (``create_tag_prediction_task``).

The goal is to predict a post's tags from its bag of words (the words of the sentence and the
question's title); a client is a StackOverflow user. The model is TFF's logistic regression
(``Dense(num_tags, sigmoid)``: :func:`~fedjax_like.models.zoo.stackoverflow_tag_lr`), trained on
the binary cross-entropy **summed** over a batch (TFF's ``Reduction.SUM``: the client learning
rate is per summed batch loss) and reported with ``precision`` and ``recall_at_5``. Train data is
the ``train`` split, test data ``test``, validation data ``heldout``. Evaluation clients are batched
100 examples at a time and not shuffled unless ``eval_client_spec`` says otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from fedjax_like.data.client_data import ClientData
from fedjax_like.data.sources import stackoverflow
from fedjax_like.models.zoo import stackoverflow_tag_lr
from fedjax_like.simulation.baselines.baseline_task import BaselineTask, BaselineTaskDatasets
from fedjax_like.simulation.baselines.client_spec import ClientSpec
from fedjax_like.simulation.baselines.stackoverflow import tag_prediction_preprocessing as prep


def create_tag_prediction_task_from_datasets(
    train_client_spec: ClientSpec,
    eval_client_spec: ClientSpec | None,
    word_vocab: Sequence[str],
    tag_vocab: Sequence[str],
    train_data: ClientData,
    test_data: ClientData,
    validation_data: ClientData | None,
) -> BaselineTask:
  """The tag task on the given data (raw StackOverflow examples: ``tokens``, ``title``, ``tags``).

  Args:
    train_client_spec: how training clients are preprocessed.
    eval_client_spec: how evaluation clients are (None: 1 epoch, batch 100, no shuffle).
    word_vocab: the input words, most frequent first.
    tag_vocab: the tags to predict, most frequent first.
    train_data, test_data, validation_data: the clients.
  """
  if eval_client_spec is None:
    eval_client_spec = ClientSpec(num_epochs=1, batch_size=100, shuffle_buffer_size=1)
  make = functools.partial(prep.create_preprocess_fn, word_vocab=list(word_vocab),
                           tag_vocab=list(tag_vocab))
  datasets = BaselineTaskDatasets(
      train_data, test_data, validation_data, make(train_client_spec), make(eval_client_spec))
  model_fn = functools.partial(
      stackoverflow_tag_lr, word_vocab_size=len(word_vocab), tag_vocab_size=len(tag_vocab))
  return BaselineTask(datasets, model_fn)


def create_tag_prediction_task(
    train_client_spec: ClientSpec,
    eval_client_spec: ClientSpec | None = None,
    word_vocab_size: int = prep.DEFAULT_WORD_VOCAB_SIZE,
    tag_vocab_size: int = prep.DEFAULT_TAG_VOCAB_SIZE,
    cache_dir: str | None = None,
    download: bool = True,
) -> BaselineTask:
  """TFF's tag task on federated StackOverflow, with the ``word_vocab_size`` most frequent words
  and ``tag_vocab_size`` most frequent tags of TFF's counts."""
  if word_vocab_size < 1:
    raise ValueError('word_vocab_size must be a positive integer')
  if tag_vocab_size < 1:
    raise ValueError('tag_vocab_size must be a positive integer')
  train, heldout, test = stackoverflow.load_data(cache_dir, download=download)
  words = stackoverflow.load_word_counts(cache_dir, vocab_size=word_vocab_size, download=download)
  tags = stackoverflow.load_tag_counts(cache_dir, download=download)
  return create_tag_prediction_task_from_datasets(
      train_client_spec, eval_client_spec, list(words)[:word_vocab_size],
      list(tags)[:tag_vocab_size], train, test, heldout)
