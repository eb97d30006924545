"""Models as pure functions, adapters from Flax (linen and nnx), and a zoo of standard models."""

from fedjax_like.models import zoo
from fedjax_like.models.flax import export_flax_variables, from_linen, from_nnx
from fedjax_like.models.losses import SparseCategoricalCrossentropy
from fedjax_like.models.model import Model, ModelWeights, accuracy, softmax_cross_entropy

__all__ = [
    'Model',
    'ModelWeights',
    'SparseCategoricalCrossentropy',
    'accuracy',
    'export_flax_variables',
    'from_linen',
    'from_nnx',
    'softmax_cross_entropy',
    'zoo',
]
