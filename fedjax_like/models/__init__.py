"""Models as pure functions, adapters from Flax (linen and nnx), metrics, and a zoo of standard
models."""

from fedjax_like.models import metrics, zoo
from fedjax_like.models.flax import from_linen, from_nnx
from fedjax_like.models.model import (
    Metric,
    Model,
    ModelWeights,
    accuracy,
    softmax_cross_entropy,
)

__all__ = [
    'Metric',
    'Model',
    'ModelWeights',
    'accuracy',
    'from_linen',
    'from_nnx',
    'metrics',
    'softmax_cross_entropy',
    'zoo',
]
