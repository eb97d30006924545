"""Federated learning algorithms, each built from the Federated Core's intrinsics."""

from fedjax_like.learning.algorithms.fed_avg import (
    ClientWeighting,
    build_unweighted_fed_avg,
    build_weighted_fed_avg,
)

__all__ = ['ClientWeighting', 'build_unweighted_fed_avg', 'build_weighted_fed_avg']
