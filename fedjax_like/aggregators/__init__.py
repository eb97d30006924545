"""Aggregators: how client values become one server value, as ``tff.aggregators``.

Every aggregator is a factory with ``create(value_type) -> AggregationProcess`` and an
``is_weighted`` flag; the process is a pure ``(initialize, next)`` pair with its own state and
measurements (see :mod:`fedjax_like.aggregators.factory`). Learning algorithms take a factory as
``model_aggregator`` and create it for the model's update type when they are composed.

Here now, each a factory (or process) in its own module, nesting like TFF's (an outer factory
wraps an inner one, e.g. zeroing(clipping(mean))):

- ``mean``: ``MeanFactory``, ``UnweightedMeanFactory``; ``sum_factory``: ``SumFactory``;
- ``clipping``: ``clipping_factory`` (global L2 clipping) and ``zeroing_factory`` (L1/L2/L-inf
  zeroing), with a fixed norm or an adaptive one given as an ``EstimationProcess``;
- ``quantile_estimation``: ``PrivateQuantileEstimationProcess`` (and ``.no_noise``), the adaptive
  norm that tracks a quantile of the clients' norms (TFF's geometric update);
- ``estimation``: the ``EstimationProcess`` template (``initialize``/``next``/``report``) and its
  map-reduce form;
- ``differential_privacy``: ``DifferentiallyPrivateFactory.gaussian_fixed`` / ``.gaussian_adaptive``
  (DP-FedAvg: a clipped sum plus Gaussian noise from a key in the state, over the expected cohort;
  unweighted, as in TFF);
- ``matrix_factorization``: ``BandedMatrixFactorizationFactory`` (DP-FTRL: the clipped sum with
  noise correlated across rounds by a banded matrix factorization, from ``jax-privacy``);
- ``robust``: ``MedianFactory`` and ``TrimmedMeanFactory`` (coordinate-wise; not sums: they take
  the materialized client values);
- ``secure``: ``SecureSumFactory`` (integer and float modes as TFF's: clip, encode in
  ``[0, 2**b)``, secure sum, decode), bounds fixed or adaptive; ``secure_modular``:
  ``SecureModularSumFactory`` (a modular sum that really wraps around, and reports it).

Privacy accounting (the epsilon a DP aggregator spends over a run) is
:mod:`fedjax_like.learning.privacy_accounting`.

The plan, still to come:

- ``robust``: Krum, Multi-Krum, geometric median (not sums: they take materialized values);
- ``compression``: quantization and sparsification of client values before the sum.

The sum-shaped ones provide a :class:`~fedjax_like.aggregators.factory.MapReduceForm`
(``prepare`` / per-client ``work`` / ``report``) so a learning process fuses their client-side work
into the clients' training and reduces the cohort with one ``federated_sum``.
"""

from fedjax_like.aggregators.clipping import clipping_factory, zeroing_factory
from fedjax_like.aggregators.differential_privacy import (
    DifferentiallyPrivateFactory,
    adaptive_clip_noise_params,
)
from fedjax_like.aggregators.estimation import (
    EstimationMapReduceForm,
    EstimationProcess,
    build_map_reduce_estimation,
    constant_process,
)
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
from fedjax_like.aggregators.matrix_factorization import BandedMatrixFactorizationFactory
from fedjax_like.aggregators.mean import MeanFactory, UnweightedMeanFactory
from fedjax_like.aggregators.quantile_estimation import PrivateQuantileEstimationProcess
from fedjax_like.aggregators.robust import MedianFactory, TrimmedMeanFactory
from fedjax_like.aggregators.secure import SecureSumFactory
from fedjax_like.aggregators.secure_modular import SecureModularSumFactory
from fedjax_like.aggregators.sum_factory import SumFactory

__all__ = [
    'AggregationFactory',
    'AggregationProcess',
    'BandedMatrixFactorizationFactory',
    'DifferentiallyPrivateFactory',
    'EstimationMapReduceForm',
    'EstimationProcess',
    'MapReduceForm',
    'MeanFactory',
    'MeasuredProcessOutput',
    'MedianFactory',
    'PrivateQuantileEstimationProcess',
    'SecureModularSumFactory',
    'SecureSumFactory',
    'SumFactory',
    'TrimmedMeanFactory',
    'UnweightedMeanFactory',
    'adaptive_clip_noise_params',
    'build_map_reduce_aggregation',
    'build_map_reduce_estimation',
    'clipping_factory',
    'constant_process',
    'format_type',
    'same_type',
    'tensor_type',
    'zeroing_factory',
]
