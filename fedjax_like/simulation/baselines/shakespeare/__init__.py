"""TFF's Shakespeare next-character prediction baseline (``tff.simulation.baselines.shakespeare``):
preprocessing (:mod:`.char_prediction_preprocessing`) and the task (:mod:`.char_prediction_tasks`).
"""

from fedjax_like.simulation.baselines.shakespeare import (
    char_prediction_preprocessing,
    char_prediction_tasks,
)
from fedjax_like.simulation.baselines.shakespeare.char_prediction_preprocessing import (
    CHAR_VOCAB,
    DEFAULT_SEQUENCE_LENGTH,
    create_preprocess_fn,
    get_special_tokens,
)
from fedjax_like.simulation.baselines.shakespeare.char_prediction_tasks import (
    create_character_prediction_task,
    create_character_prediction_task_from_datasets,
)

VOCAB_LENGTH = len(CHAR_VOCAB) + 4  # The characters, then pad 0 and oov, bos, eos: 90.

__all__ = [
    'CHAR_VOCAB',
    'DEFAULT_SEQUENCE_LENGTH',
    'VOCAB_LENGTH',
    'char_prediction_preprocessing',
    'char_prediction_tasks',
    'create_character_prediction_task',
    'create_character_prediction_task_from_datasets',
    'create_preprocess_fn',
    'get_special_tokens',
]
