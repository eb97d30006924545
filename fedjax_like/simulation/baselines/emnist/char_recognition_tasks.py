"""TFF's EMNIST character recognition task (``create_character_recognition_task``).

Digits (10 classes) or all 62 characters, 28x28x1 pixels (:mod:`.emnist_preprocessing`); the
model is one of TFF's (:mod:`fedjax_like.models.zoo.emnist`): ``'cnn_dropout'`` (Reddi et al.'s
CNN, TFF's default), ``'cnn'`` (McMahan et al.'s CNN) or ``'2nn'`` (two dense layers of 200),
with the softmax cross-entropy and ``accuracy``. Evaluation clients are batched 64 at a time, not
shuffled.
"""

from __future__ import annotations

import enum

import jax
import jax.numpy as jnp

from fedjax_like.data.client_data import ClientData
from fedjax_like.data.sources import emnist
from fedjax_like.models.flax import from_linen
from fedjax_like.models.model import Model
from fedjax_like.models.zoo.emnist import MLP, EmnistCnn, FedAvgCnn
from fedjax_like.simulation.baselines.baseline_task import BaselineTask, BaselineTaskDatasets
from fedjax_like.simulation.baselines.client_spec import ClientSpec
from fedjax_like.simulation.baselines.emnist import emnist_preprocessing as prep


class CharacterRecognitionModel(enum.Enum):
  """TFF's model ids for the task."""

  CNN_DROPOUT = 'cnn_dropout'
  CNN = 'cnn'
  TWO_LAYER_DNN = '2nn'


_MODULES = {'cnn_dropout': EmnistCnn, 'cnn': FedAvgCnn, '2nn': MLP}


def character_recognition_model(model_id: str, only_digits: bool) -> Model:
  """TFF's model ``model_id`` with 10 or 62 outputs; ``x`` float32 ``[28, 28, 1]``."""
  try:
    model_id = CharacterRecognitionModel(model_id).value
  except ValueError as e:
    raise ValueError(f'model_id must be one of {sorted(_MODULES)}; found {model_id!r}.') from e
  spec = (jax.ShapeDtypeStruct((28, 28, 1), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
  return from_linen(_MODULES[model_id](num_classes=10 if only_digits else 62), input_spec=spec)


def create_character_recognition_task_from_datasets(
    train_client_spec: ClientSpec,
    eval_client_spec: ClientSpec | None,
    model_id: str | CharacterRecognitionModel,
    only_digits: bool,
    train_data: ClientData,
    test_data: ClientData,
) -> BaselineTask:
  """The task on the given EMNIST clients (examples with ``pixels`` [28, 28] and ``label``)."""
  if eval_client_spec is None:
    eval_client_spec = ClientSpec(num_epochs=1, batch_size=64, shuffle_buffer_size=1)
  model_id = model_id.value if isinstance(model_id, CharacterRecognitionModel) else model_id
  character_recognition_model(model_id, only_digits)  # Checks the id before any data is read.
  datasets = BaselineTaskDatasets(
      train_data, test_data, None, prep.create_preprocess_fn(train_client_spec),
      prep.create_preprocess_fn(eval_client_spec))
  return BaselineTask(datasets, lambda: character_recognition_model(model_id, only_digits))


def create_character_recognition_task(
    train_client_spec: ClientSpec,
    eval_client_spec: ClientSpec | None = None,
    model_id: str | CharacterRecognitionModel = 'cnn_dropout',
    only_digits: bool = False,
    cache_dir: str | None = None,
    download: bool = True,
) -> BaselineTask:
  """TFF's task on federated EMNIST (:func:`fedjax_like.data.sources.emnist.load_data`)."""
  train, test = emnist.load_data(only_digits, cache_dir, download=download)
  return create_character_recognition_task_from_datasets(
      train_client_spec, eval_client_spec, model_id, only_digits, train, test)
