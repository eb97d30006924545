"""TFF's StackOverflow baselines (``tff.simulation.baselines.stackoverflow``): next-word prediction
(:mod:`.word_prediction_preprocessing`, :mod:`.word_prediction_tasks`) and tag prediction
(:mod:`.tag_prediction_preprocessing`, :mod:`.tag_prediction_tasks`); :mod:`.farmhash` is the
string fingerprint TensorFlow buckets out-of-vocabulary words with."""

from fedjax_like.simulation.baselines.stackoverflow import (
    farmhash,
    tag_prediction_preprocessing,
    tag_prediction_tasks,
    word_prediction_preprocessing,
    word_prediction_tasks,
)
from fedjax_like.simulation.baselines.stackoverflow.tag_prediction_preprocessing import (
    DEFAULT_TAG_VOCAB_SIZE,
)
from fedjax_like.simulation.baselines.stackoverflow.tag_prediction_tasks import (
    create_tag_prediction_task,
    create_tag_prediction_task_from_datasets,
)
from fedjax_like.simulation.baselines.stackoverflow.word_prediction_preprocessing import (
    DEFAULT_SEQUENCE_LENGTH,
    DEFAULT_WORD_VOCAB_SIZE,
    get_special_tokens,
)
from fedjax_like.simulation.baselines.stackoverflow.word_prediction_tasks import (
    create_word_prediction_task,
    create_word_prediction_task_from_datasets,
)

__all__ = [
    'DEFAULT_SEQUENCE_LENGTH',
    'DEFAULT_TAG_VOCAB_SIZE',
    'DEFAULT_WORD_VOCAB_SIZE',
    'create_tag_prediction_task',
    'create_tag_prediction_task_from_datasets',
    'create_word_prediction_task',
    'create_word_prediction_task_from_datasets',
    'farmhash',
    'get_special_tokens',
    'tag_prediction_preprocessing',
    'tag_prediction_tasks',
    'word_prediction_preprocessing',
    'word_prediction_tasks',
]
