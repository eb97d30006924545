"""TFF's Shakespeare next-character prediction baseline (``tff.simulation.baselines.shakespeare``).

Preprocessing only, for now (:mod:`.char_prediction_preprocessing`); the model and task builder
are still to come.
"""

from fedjax_like.simulation.baselines.shakespeare import char_prediction_preprocessing
from fedjax_like.simulation.baselines.shakespeare.char_prediction_preprocessing import (
    CHAR_VOCAB,
    DEFAULT_SEQUENCE_LENGTH,
    create_preprocess_fn,
    get_special_tokens,
)

VOCAB_LENGTH = len(CHAR_VOCAB) + 4  # The characters, then pad 0 and oov, bos, eos: 90.

__all__ = [
    'CHAR_VOCAB',
    'DEFAULT_SEQUENCE_LENGTH',
    'VOCAB_LENGTH',
    'char_prediction_preprocessing',
    'create_preprocess_fn',
    'get_special_tokens',
]
