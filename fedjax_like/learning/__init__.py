"""The Federated Learning API: optimizers, learning processes and algorithms."""

from fedjax_like.learning import algorithms, optimizers
from fedjax_like.learning.process import (
    LearningAlgorithmState,
    LearningProcess,
    LearningProcessOutput,
)

__all__ = [
    'LearningAlgorithmState',
    'LearningProcess',
    'LearningProcessOutput',
    'algorithms',
    'optimizers',
]
