"""The Federated Core: pytree arithmetic, placements, intrinsics and the cohort engine."""

from fedjax_like.core import cohort, tree
from fedjax_like.core.intrinsics import (
    FederatedValue,
    federated_broadcast,
    federated_map,
    federated_max,
    federated_mean,
    federated_min,
    federated_sum,
    federated_value,
    federated_zip,
)
from fedjax_like.core.placements import CLIENTS, SERVER, FederatedType, Placement

__all__ = [
    'CLIENTS',
    'SERVER',
    'FederatedType',
    'FederatedValue',
    'Placement',
    'cohort',
    'federated_broadcast',
    'federated_map',
    'federated_max',
    'federated_mean',
    'federated_min',
    'federated_sum',
    'federated_value',
    'federated_zip',
    'tree',
]
