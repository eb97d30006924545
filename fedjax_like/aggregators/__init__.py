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
- ``robust``: ``MedianFactory`` and ``TrimmedMeanFactory`` (coordinate-wise); ``krum``:
  ``KrumFactory`` (Krum and Multi-Krum); ``geometric_median``: ``GeometricMedianFactory`` (RFA's
  smoothed Weiszfeld passes). Not sums: they take the materialized client values (memory
  O(cohort x model), named by the engine's memory check);
- ``secure``: ``SecureSumFactory`` (integer and float modes as TFF's: clip, encode in
  ``[0, 2**b)``, secure sum, decode), bounds fixed or adaptive; ``secure_modular``:
  ``SecureModularSumFactory`` (a modular sum that really wraps around, and reports it);
- compression, each wrapping an inner factory and reporting bits per client against float32
  (``compression``): ``quantization``: ``UniformQuantizationFactory`` (unbiased stochastic
  rounding to 1..32 bits over each client's tensor range, keys from the state) and
  ``EncodedSumFactory.quantize_above_threshold`` (TFF's); ``rotation``:
  ``HadamardTransformFactory`` (random signs and a fast Walsh-Hadamard transform, undone after
  the inner aggregation); ``sparsification``: ``TopKSparsificationFactory`` (top-k with error
  feedback: an aggregation with client state, see ``factory``).

Privacy accounting (the epsilon a DP aggregator spends over a run) is
:mod:`fedjax_like.learning.privacy_accounting`.

Every ``next`` is written with the Federated Core's intrinsics, whose reductions are lazy: inside a
learning process an aggregator's per-client work runs in the round's one engine pass, right after
each client's training (sum-shaped ones may be written as a
:class:`~fedjax_like.aggregators.factory.MapReduceForm`, which ``build_map_reduce_aggregation``
turns into such a ``next``).
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
    ClientStatesOutput,
    MapReduceForm,
    MeasuredProcessOutput,
    build_map_reduce_aggregation,
    call_next,
    format_type,
    same_type,
    tensor_type,
)
from fedjax_like.aggregators.geometric_median import GeometricMedianFactory
from fedjax_like.aggregators.krum import KrumFactory
from fedjax_like.aggregators.matrix_factorization import BandedMatrixFactorizationFactory
from fedjax_like.aggregators.mean import MeanFactory, UnweightedMeanFactory
from fedjax_like.aggregators.quantile_estimation import PrivateQuantileEstimationProcess
from fedjax_like.aggregators.quantization import EncodedSumFactory, UniformQuantizationFactory
from fedjax_like.aggregators.robust import MedianFactory, TrimmedMeanFactory
from fedjax_like.aggregators.rotation import HadamardTransformFactory
from fedjax_like.aggregators.secure import SecureSumFactory
from fedjax_like.aggregators.secure_modular import SecureModularSumFactory
from fedjax_like.aggregators.sparsification import TopKSparsificationFactory
from fedjax_like.aggregators.sum_factory import SumFactory

__all__ = [
    'AggregationFactory',
    'AggregationProcess',
    'BandedMatrixFactorizationFactory',
    'ClientStatesOutput',
    'DifferentiallyPrivateFactory',
    'EncodedSumFactory',
    'EstimationMapReduceForm',
    'EstimationProcess',
    'GeometricMedianFactory',
    'HadamardTransformFactory',
    'KrumFactory',
    'MapReduceForm',
    'MeanFactory',
    'MeasuredProcessOutput',
    'MedianFactory',
    'PrivateQuantileEstimationProcess',
    'SecureModularSumFactory',
    'SecureSumFactory',
    'SumFactory',
    'TopKSparsificationFactory',
    'TrimmedMeanFactory',
    'UniformQuantizationFactory',
    'UnweightedMeanFactory',
    'adaptive_clip_noise_params',
    'build_map_reduce_aggregation',
    'build_map_reduce_estimation',
    'call_next',
    'clipping_factory',
    'constant_process',
    'format_type',
    'same_type',
    'tensor_type',
    'zeroing_factory',
]
