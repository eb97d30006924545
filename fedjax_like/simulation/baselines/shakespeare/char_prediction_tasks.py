"""TFF's Shakespeare next-character prediction task (``create_character_prediction_task``).

Each client is a speaking role in a play; its snippets are cut into rows of ``sequence_length``
characters (:mod:`.char_prediction_preprocessing`). The model is TFF's character LSTM (embedding
8, 2 x LSTM 256, dense 90: :func:`~fedjax_like.models.zoo.shakespeare_char_lstm`) with the token
cross-entropy and TFF's metrics ``num_tokens`` and ``accuracy`` over non-pad characters.
Evaluation clients are batched 32 rows at a time, not shuffled. There is no validation data.
"""

from __future__ import annotations

import functools

from fedjax_like.data.client_data import ClientData
from fedjax_like.data.sources import shakespeare
from fedjax_like.models.zoo import shakespeare_char_lstm
from fedjax_like.simulation.baselines.baseline_task import BaselineTask, BaselineTaskDatasets
from fedjax_like.simulation.baselines.client_spec import ClientSpec
from fedjax_like.simulation.baselines.shakespeare import char_prediction_preprocessing as prep


def create_character_prediction_task_from_datasets(
    train_client_spec: ClientSpec,
    eval_client_spec: ClientSpec | None,
    sequence_length: int,
    train_data: ClientData,
    test_data: ClientData,
    loss_mask: str = 'inputs',
) -> BaselineTask:
  """The task on the given clients (examples with a ``snippets`` field).

  Args:
    train_client_spec: how training clients are preprocessed.
    eval_client_spec: how evaluation clients are (None: 1 epoch, batch 32, no shuffle).
    sequence_length: characters per row (positive; TFF's 80).
    train_data, test_data: the clients.
    loss_mask: the tokens the loss averages over (``'inputs'`` is TFF's; see
      :func:`~fedjax_like.models.metrics.sequence_loss_mask`).
  """
  if sequence_length < 1:
    raise ValueError('sequence_length must be a positive integer')
  if eval_client_spec is None:
    eval_client_spec = ClientSpec(num_epochs=1, batch_size=32, shuffle_buffer_size=1)
  datasets = BaselineTaskDatasets(
      train_data, test_data, None,
      prep.create_preprocess_fn(train_client_spec, sequence_length),
      prep.create_preprocess_fn(eval_client_spec, sequence_length))
  model_fn = functools.partial(shakespeare_char_lstm, sequence_length, loss_mask=loss_mask)
  return BaselineTask(datasets, model_fn)


def create_character_prediction_task(
    train_client_spec: ClientSpec,
    eval_client_spec: ClientSpec | None = None,
    sequence_length: int = prep.DEFAULT_SEQUENCE_LENGTH,
    cache_dir: str | None = None,
    download: bool = True,
    loss_mask: str = 'inputs',
) -> BaselineTask:
  """TFF's task on federated Shakespeare (:mod:`fedjax_like.data.sources.shakespeare`)."""
  train, test = shakespeare.load_data(cache_dir, download=download)
  return create_character_prediction_task_from_datasets(
      train_client_spec, eval_client_spec, sequence_length, train, test, loss_mask=loss_mask)
