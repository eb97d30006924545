"""TFF's CIFAR-100 image classification task (``create_image_classification_task``).

Images cropped to ``crop_height x crop_width`` (TFF's 24x24) and standardized
(:mod:`.image_classification_preprocessing`); the model is TFF's ResNet-18 with group norm
(:func:`~fedjax_like.models.zoo.resnet18`, 2 groups as Reddi et al.; ``num_groups=32`` is TFF's
current model), with its L2 penalty, the softmax cross-entropy and ``accuracy``. Training images
are randomly cropped and flipped only with ``distort_train_images=True`` (TFF's default is
False; Reddi et al. distort). Evaluation clients are batched 64 at a time, not shuffled.
"""

from __future__ import annotations

import enum
import functools

from fedjax_like.data.client_data import ClientData
from fedjax_like.data.sources import cifar100
from fedjax_like.models.zoo import resnet18
from fedjax_like.simulation.baselines.baseline_task import BaselineTask, BaselineTaskDatasets
from fedjax_like.simulation.baselines.cifar100 import image_classification_preprocessing as prep
from fedjax_like.simulation.baselines.client_spec import ClientSpec

DEFAULT_CROP_HEIGHT = 24
DEFAULT_CROP_WIDTH = 24
_NUM_CLASSES = 100


class ResnetModel(enum.Enum):
  """The models this task builds (TFF's enum; only ResNet-18 is provided here)."""

  RESNET18 = 'resnet18'


def create_image_classification_task_with_datasets(
    train_client_spec: ClientSpec,
    eval_client_spec: ClientSpec | None,
    model_id: str | ResnetModel,
    crop_height: int,
    crop_width: int,
    distort_train_images: bool,
    train_data: ClientData,
    test_data: ClientData,
    num_groups: int = 2,
) -> BaselineTask:
  """The CIFAR-100 task on the given data (examples with ``image`` uint8 [32, 32, 3], ``label``).

  Args:
    train_client_spec: how training clients are preprocessed.
    eval_client_spec: how evaluation clients are (None: 1 epoch, batch 64, no shuffle).
    model_id: ``'resnet18'``.
    crop_height, crop_width: the crop, each in [1, 32].
    distort_train_images: random crops and flips for training.
    train_data, test_data: the clients.
    num_groups: groups per group-norm layer (2: the paper; 32: TFF now).
  """
  try:
    ResnetModel(model_id)
  except ValueError as e:
    raise ValueError(
        f"The model argument must be one of {[m.value for m in ResnetModel]}, found {model_id!r}."
    ) from e
  if crop_height < 1 or crop_width < 1 or crop_height > 32 or crop_width > 32:
    raise ValueError('The crop_height and crop_width must be between 1 and 32.')
  crop_shape = (crop_height, crop_width, 3)
  if eval_client_spec is None:
    eval_client_spec = ClientSpec(num_epochs=1, batch_size=64, shuffle_buffer_size=1)
  datasets = BaselineTaskDatasets(
      train_data, test_data, None,
      prep.create_preprocess_fn(train_client_spec, crop_shape, distort_train_images),
      prep.create_preprocess_fn(eval_client_spec, crop_shape))
  model_fn = functools.partial(resnet18, _NUM_CLASSES, crop_shape, num_groups)
  return BaselineTask(datasets, model_fn)


def create_image_classification_task(
    train_client_spec: ClientSpec,
    eval_client_spec: ClientSpec | None = None,
    model_id: str | ResnetModel = 'resnet18',
    crop_height: int = DEFAULT_CROP_HEIGHT,
    crop_width: int = DEFAULT_CROP_WIDTH,
    distort_train_images: bool = False,
    cache_dir: str | None = None,
    download: bool = True,
    num_groups: int = 2,
) -> BaselineTask:
  """TFF's CIFAR-100 task on federated CIFAR-100 (:mod:`fedjax_like.data.sources.cifar100`)."""
  train, test = cifar100.load_data(cache_dir, download=download)
  return create_image_classification_task_with_datasets(
      train_client_spec, eval_client_spec, model_id, crop_height, crop_width,
      distort_train_images, train, test, num_groups=num_groups)
