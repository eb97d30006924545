"""Models as pure functions, adapters from Flax (linen and nnx), metrics, and a zoo of standard
models."""

from fedjax_like.models import metrics, zoo
from fedjax_like.models.flax import export_flax_variables, from_linen, from_nnx
from fedjax_like.models.losses import SparseCategoricalCrossentropy
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
    'SparseCategoricalCrossentropy',
    'accuracy',
    'export_flax_variables',
    'from_linen',
    'from_nnx',
    'metrics',
    'softmax_cross_entropy',
    'zoo',
]
