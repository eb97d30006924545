"""TFF's EMNIST baseline (``tff.simulation.baselines.emnist``): character recognition
preprocessing (:mod:`.emnist_preprocessing`) and the task (:mod:`.char_recognition_tasks`)."""

from fedjax_like.simulation.baselines.emnist import char_recognition_tasks, emnist_preprocessing
from fedjax_like.simulation.baselines.emnist.char_recognition_tasks import (
    CharacterRecognitionModel,
    create_character_recognition_task,
    create_character_recognition_task_from_datasets,
)

__all__ = [
    'CharacterRecognitionModel',
    'char_recognition_tasks',
    'create_character_recognition_task',
    'create_character_recognition_task_from_datasets',
    'emnist_preprocessing',
]
