"""The driver's datasets: each ``--data.dataset`` as a task with its data, model and preprocessing.

:func:`load_task` turns the config's ``data``, ``model`` and ``training`` sections into a
:class:`DriverTask`: train and test :class:`ClientData`, the :class:`Model` (with the task's loss
and metrics), a per-round training preprocessing and an evaluation preprocessing. Every dataset
goes through its ``tff.simulation.baselines`` task (:mod:`fedjax_like.simulation.baselines`), so the
arrays are TFF's, and nothing here knows a dataset's feature names (models for
``model.name = 'auto'``):

- ``digits``: EMNIST character recognition on the offline digits (EMNIST's format); model
  ``logistic`` (or any image classifier of the zoo, ``model.name``);
- ``emnist``: EMNIST character recognition; ``cnn`` (Reddi et al.'s CNN) or any image classifier;
- ``shakespeare``: next-character prediction; the character LSTM;
- ``stackoverflow_word``: next-word prediction; the word LSTM;
- ``stackoverflow_tag``: tag prediction; the tag logistic regression;
- ``cifar100``: image classification of 24x24 crops; ResNet-18 with group norm;
- ``tfds``: a tensorflow-datasets image or text classification dataset split into clients
  (:mod:`fedjax_like.simulation.tfds_task`: images scaled to [0, 1] for a zoo image classifier,
  texts as a bag of words for a logistic regression).

A client's training batches in round ``r`` are the task's preprocessing (shuffle, repeat
``training.client_epochs``, take ``training.max_client_examples``, map, batch
``training.batch_size``) seeded by ``(seed, r, client id)`` alone, so a resumed run replays the
same batches. Evaluation uses the task's evaluation preprocessing (no shuffle); its examples are
then batched by :class:`~fedjax_like.simulation.evaluation.FederatedEvaluation`. Where a zoo
model's input is shaped differently from the task's examples (the dense models read the 28x28x1
pixels as 784 values), examples are reshaped to the model's input.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable

import numpy as np

from fedjax_like.data.client_data import ClientData
from fedjax_like.data.dataset import BatchedDataset, Dataset
from fedjax_like.models import zoo
from fedjax_like.models.model import Model
from fedjax_like.simulation import baselines
from fedjax_like.simulation.baselines import BaselineTask, ClientSpec
from fedjax_like.simulation.config_files import ConfigError

_STREAM = 0x7A5C
IMAGE_CLASSIFIERS = ('logistic', 'mlp', 'cnn', 'fedavg_cnn')


@dataclasses.dataclass(frozen=True)
class DriverTask:
  """What the driver trains and evaluates.

  Attributes:
    train_data, test_data: raw client data.
    model: the model, with the task's loss and metrics.
    train_preprocess: ``(dataset, round_num) -> BatchedDataset`` for training clients.
    eval_preprocess: ``dataset -> Dataset`` of one test client's ``(x, y)`` examples.
  """

  train_data: ClientData
  test_data: ClientData
  model: Model
  train_preprocess: Callable[[Dataset, int], BatchedDataset]
  eval_preprocess: Callable[[Dataset], Dataset]


def _conform(elements: tuple, model: Model, leading: int) -> tuple:
  """``(x, y)`` with ``x`` reshaped to the model's input where only the shape differs."""
  x, y = elements
  shape = tuple(model.input_spec[0].shape)
  if isinstance(x, np.ndarray) and x.shape[leading:] != shape and (
      int(np.prod(x.shape[leading:])) == int(np.prod(shape))):
    x = x.reshape(x.shape[:leading] + shape)
  return x, y


@dataclasses.dataclass(frozen=True)
class _TrainPreprocess:
  preprocess_fn: Callable[..., BatchedDataset]
  model: Model
  seed: int

  def __call__(self, dataset: Dataset, round_num: int) -> BatchedDataset:
    client = (dataset.client_id or '').encode()
    seed = np.random.SeedSequence([int(self.seed), int(round_num), zlib.crc32(client), _STREAM])
    batched = self.preprocess_fn(dataset, seed=seed)
    batches = _conform(batched.batches, self.model, leading=2)
    return BatchedDataset(batches, batched.mask, client_id=batched.client_id)


@dataclasses.dataclass(frozen=True)
class _EvalPreprocess:
  preprocess_fn: Callable[..., BatchedDataset]
  model: Model

  def __call__(self, dataset: Dataset) -> Dataset:
    examples = baselines.unbatch(self.preprocess_fn(dataset, seed=0))
    return Dataset(_conform(examples.elements, self.model, leading=1),
                   client_id=examples.client_id)


def _image_model(name: str, num_classes: int) -> Model:
  return zoo.create_model('logistic' if name == 'auto' else name, num_classes)


def _baseline_task(data, model, spec: ClientSpec) -> tuple[BaselineTask, Model | None]:
  """The dataset's baseline task, and the zoo model that replaces its own (or None)."""
  kwargs = dict(cache_dir=data.cache_dir, download=data.download)
  name = data.dataset
  if name in ('digits', 'emnist'):
    classes = 10 if (name == 'digits' or data.only_digits) else 62
    model_name = model.name if model.name != 'auto' else ('logistic' if name == 'digits' else 'cnn')
    if name == 'digits':
      from fedjax_like.data.sources import digits
      train, test = digits.load_data(data.num_clients, data.alpha, seed=data.partition_seed)
    else:
      from fedjax_like.data.sources import emnist
      train, test = emnist.load_data(data.only_digits, data.cache_dir, download=data.download)
    task = baselines.emnist.create_character_recognition_task_from_datasets(
        spec, None, 'cnn_dropout', classes == 10, train, test)
    return task, _image_model(model_name, classes)
  if name == 'tfds':
    from fedjax_like.simulation import tfds_task
    return tfds_task.create_task(data, model, spec), None
  if model.name != 'auto':
    raise ConfigError(
        f"model.name = '{model.name}' is an image classifier for digits, emnist and tfds; "
        f"data.dataset = '{name}' trains its own model: set model.name = 'auto'."
    )
  if name == 'shakespeare':
    task = baselines.shakespeare.create_character_prediction_task(
        spec, sequence_length=data.sequence_length or 80, loss_mask=model.loss_mask, **kwargs)
  elif name == 'stackoverflow_word':
    task = baselines.stackoverflow.create_word_prediction_task(
        spec, sequence_length=data.sequence_length or 20, vocab_size=data.vocab_size,
        num_out_of_vocab_buckets=data.num_out_of_vocab_buckets, loss_mask=model.loss_mask,
        **kwargs)
  elif name == 'stackoverflow_tag':
    task = baselines.stackoverflow.create_tag_prediction_task(
        spec, word_vocab_size=data.vocab_size, tag_vocab_size=data.tag_vocab_size, **kwargs)
  elif name == 'cifar100':
    task = baselines.cifar100.create_image_classification_task(
        spec, crop_height=data.crop_size, crop_width=data.crop_size,
        distort_train_images=data.distort_train_images, num_groups=model.num_groups, **kwargs)
  else:
    raise ConfigError(f"data.dataset = '{name}' is not a known dataset.")
  return task, None


def load_task(data, model, training, seed: int = 0) -> DriverTask:
  """The task of the config's ``data``, ``model`` and ``training`` sections.

  Raises:
    ConfigError: the dataset cannot be loaded (naming ``data.dataset``, the file and where it is
      expected), or the options do not fit the dataset.
  """
  from fedjax_like.data.sources import DatasetNotFoundError

  spec = ClientSpec(training.client_epochs, training.batch_size, training.max_client_examples)
  try:
    task, replacement = _baseline_task(data, model, spec)
  except ConfigError:
    raise
  except (DatasetNotFoundError, ImportError, ValueError) as e:
    hint = ''
    if isinstance(e, DatasetNotFoundError):
      hint = '\nIn a config, the directory is data.cache_dir (--data.cache_dir DIR).'
    raise ConfigError(f"data.dataset = '{data.dataset}' cannot be loaded: {e}{hint}") from e
  built = replacement or task.model_fn()
  datasets = task.datasets
  return DriverTask(
      datasets.train_data,
      datasets.test_data,
      built,
      _TrainPreprocess(datasets.train_preprocess_fn, built, seed),
      _EvalPreprocess(datasets.eval_preprocess_fn, built),
  )
