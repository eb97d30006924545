"""TFF's CIFAR-100 baseline (``tff.simulation.baselines.cifar100``): preprocessing
(:mod:`.image_classification_preprocessing`) and the task (:mod:`.image_classification_tasks`)."""

from fedjax_like.simulation.baselines.cifar100 import (
    image_classification_preprocessing,
    image_classification_tasks,
)
from fedjax_like.simulation.baselines.cifar100.image_classification_tasks import (
    DEFAULT_CROP_HEIGHT,
    DEFAULT_CROP_WIDTH,
    ResnetModel,
    create_image_classification_task,
    create_image_classification_task_with_datasets,
)

__all__ = [
    'DEFAULT_CROP_HEIGHT',
    'DEFAULT_CROP_WIDTH',
    'ResnetModel',
    'create_image_classification_task',
    'create_image_classification_task_with_datasets',
    'image_classification_preprocessing',
    'image_classification_tasks',
]
