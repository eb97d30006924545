"""Aggregators: how client values become one server value, as ``tff.aggregators``.

Every aggregator is a factory with ``create(value_type) -> AggregationProcess`` and an
``is_weighted`` flag; the process is a pure ``(initialize, next)`` pair with its own state and
measurements (see :mod:`fedjax_like.aggregators.factory`). Learning algorithms take a factory as
``model_aggregator`` and create it for the model's update type when they are composed.

Here now: ``mean`` (``MeanFactory``, ``UnweightedMeanFactory``).

The plan, each one a factory in its own module, nesting like TFF's (an outer factory wraps an inner
one, e.g. DP(clipping(mean))):

- ``clipping``: L2-norm clipping with a fixed or adaptive (quantile-tracking) norm;
- ``differential_privacy``: Gaussian noise on a clipped sum (DP-FedAvg, DP-FTRL);
- ``robust``: coordinate-wise median, trimmed mean, Krum (not sums: they take materialized values);
- ``compression``: quantization and sparsification of client values before the sum;
- ``secure_sum``: integer-encoded sums with bounded bit width, as secure aggregation requires.

The sum-shaped ones provide a :class:`~fedjax_like.aggregators.factory.MapReduceForm`
(``prepare`` / per-client ``work`` / ``report``) so a learning process fuses their client-side work
into the clients' training and reduces the cohort with one ``federated_sum``.
"""

from fedjax_like.aggregators.factory import (
    AggregationFactory,
    AggregationProcess,
    MapReduceForm,
    MeasuredProcessOutput,
    build_map_reduce_aggregation,
    format_type,
    same_type,
    tensor_type,
)
from fedjax_like.aggregators.mean import MeanFactory, UnweightedMeanFactory

__all__ = [
    'AggregationFactory',
    'AggregationProcess',
    'MapReduceForm',
    'MeanFactory',
    'MeasuredProcessOutput',
    'UnweightedMeanFactory',
    'build_map_reduce_aggregation',
    'format_type',
    'same_type',
    'tensor_type',
]
