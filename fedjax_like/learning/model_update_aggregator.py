"""Ready-made model update aggregators, composed as ``tff.learning``'s (model_update_aggregator.py).

- :func:`robust_aggregator` = adaptive zeroing around adaptive clipping around the mean:

      zeroing_factory(Z, clipping_factory(C, MeanFactory()))          (norm_order = L-infinity)
      Z = PrivateQuantileEstimationProcess.no_noise(10.0, 0.98, ln 10, multiplier=2.0,
                                                    increment=1.0)    (reports 2 Z_q + 1)
      C = PrivateQuantileEstimationProcess.no_noise(1.0, 0.8, 0.2)

  Zeroing sees the raw update (its threshold starts at 21 and adapts quickly to somewhat above the
  largest L-infinity norms seen: against corrupted clients), clipping the zeroed one (its L2 norm
  tracks the 0.8 quantile: against outliers). Measurements::

      {zeroing: {clipping: <the mean's>, clipping_norm, clipped_count}, zeroing_norm, zeroed_count}

- :func:`dp_aggregator` = the same adaptive zeroing around
  ``DifferentiallyPrivateFactory.gaussian_adaptive(noise_multiplier, clients_per_round)``
  (unweighted: use it with an unweighted builder, e.g. ``build_unweighted_fed_avg``).

- :func:`secure_aggregator` = the same zeroing and clipping around a mean whose sums are secure:
  the weighted values by ``SecureSumFactory(no_noise(50.0, 0.95, 1.0, multiplier=2.0))`` (bounds
  ``+-2 C``, initially +-100, adapting to the largest absolute coordinate), the weights by
  ``SecureSumFactory(2**20 - 1.0, 0.0)`` (the count, unweighted, by ``SecureSumFactory(1, 0)``),
  and the clipped and zeroed counts by ``SecureSumFactory(1, 0)``. TFF also sums the quantile
  estimates' counts securely (``secure_estimation=True``); here they are plain sums.

- :func:`compression_aggregator` = the same zeroing and clipping around a mean whose weighted
  values are summed quantized: ``MeanFactory(EncodedSumFactory.quantize_above_threshold(
  quantization_bits=8, threshold=20000))`` (tensors with more than 20,000 elements quantized to 8
  bits, unbiased, over each client's own range; smaller ones summed as they are).

The first three are sums, so a learning process fuses them into the round's single pass. The
quantizer draws a key per client (``federated_map(..., key=)``), which a map-reduce form cannot
carry, so ``compression_aggregator`` is written with the intrinsics and the round runs its clients
materialized, then aggregates.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from fedjax_like.aggregators.clipping import clipping_factory, zeroing_factory
from fedjax_like.aggregators.differential_privacy import DifferentiallyPrivateFactory
from fedjax_like.aggregators.mean import MeanFactory, UnweightedMeanFactory
from fedjax_like.aggregators.quantile_estimation import PrivateQuantileEstimationProcess
from fedjax_like.aggregators.quantization import EncodedSumFactory
from fedjax_like.aggregators.secure import SecureSumFactory


def _secure_count():
  return SecureSumFactory(upper_bound_threshold=1, lower_bound_threshold=0)


def _default_zeroing(inner_factory, secure_estimation: bool = False):
  """TFF's default adaptive zeroing: fast adaption to somewhat above the largest norms seen."""
  zeroing_norm = PrivateQuantileEstimationProcess.no_noise(
      initial_estimate=10.0,
      target_quantile=0.98,
      learning_rate=math.log(10.0),
      multiplier=2.0,
      increment=1.0,
  )
  count = _secure_count() if secure_estimation else None
  return zeroing_factory(zeroing_norm, inner_factory, zeroed_count_sum_factory=count)


def _default_clipping(inner_factory, secure_estimation: bool = False):
  """TFF's default adaptive clipping: relatively quick adaption to a moderately high norm."""
  clipping_norm = PrivateQuantileEstimationProcess.no_noise(
      initial_estimate=1.0, target_quantile=0.8, learning_rate=0.2
  )
  count = _secure_count() if secure_estimation else None
  return clipping_factory(clipping_norm, inner_factory, clipped_count_sum_factory=count)


def robust_aggregator(
    *,
    zeroing: bool = True,
    clipping: bool = True,
    weighted: bool = True,
    debug_measurements_fn: Callable | None = None,
):
  """The mean with adaptive zeroing and adaptive L2 clipping (``tff.learning.robust_aggregator``).

  Adaptive clipping as in Andrew, Thakkar et al. (2021), https://arxiv.org/abs/1905.03871, without
  noise.

  Args:
    zeroing: adaptive zeroing (L-infinity), against data corruption on clients.
    clipping: adaptive L2 clipping, against outliers.
    weighted: ``MeanFactory`` (True) or ``UnweightedMeanFactory``.
    debug_measurements_fn: optional ``factory -> factory`` applied to the mean (TFF's hook for
      debug measurements); it must keep the weightedness.

  Returns:
    An aggregation factory.

  Raises:
    TypeError: when ``debug_measurements_fn`` changes the weightedness.
  """
  factory = MeanFactory() if weighted else UnweightedMeanFactory()
  return _robust_around(factory, weighted=weighted, zeroing=zeroing, clipping=clipping,
                        debug_measurements_fn=debug_measurements_fn)


def dp_aggregator(
    noise_multiplier: float,
    clients_per_round: float,
    zeroing: bool = True,
    *,
    seed: int | None = None,
):
  """Adaptive zeroing around adaptive-clip Gaussian DP (``tff.learning.dp_aggregator``).

  For the DP algorithm see McMahan et al. (2017), https://arxiv.org/abs/1710.06963; the adaptive
  clip is the geometric method of Andrew, Thakkar et al. (2021).

  Args:
    noise_multiplier: the effective total noise multiplier ``z`` (1.0 or more for meaningful
      privacy); must be below ``0.1 * clients_per_round`` (the default count noise, see
      ``DifferentiallyPrivateFactory.gaussian_adaptive``).
    clients_per_round: the expected number of clients per round (positive).
    zeroing: adaptive zeroing for data corruption mitigation.
    seed: the noise keys' seed (None: a fresh random seed); not in TFF, where noise is unseeded.

  Returns:
    An unweighted aggregation factory.
  """
  factory = DifferentiallyPrivateFactory.gaussian_adaptive(
      noise_multiplier, clients_per_round, seed=seed
  )
  if zeroing:
    factory = _default_zeroing(factory)
  return factory


def _robust_around(
    mean,
    *,
    weighted: bool,
    zeroing: bool,
    clipping: bool,
    debug_measurements_fn: Callable | None = None,
    secure_estimation: bool = False,
):
  """``mean`` through TFF's debug hook (its weightedness checked), then inside the default adaptive
  clipping, inside the default adaptive zeroing (each when asked)."""
  factory = mean
  if debug_measurements_fn is not None:
    factory = debug_measurements_fn(factory)
    _check_debug(factory, weighted)
  if clipping:
    factory = _default_clipping(factory, secure_estimation=secure_estimation)
  if zeroing:
    factory = _default_zeroing(factory, secure_estimation=secure_estimation)
  return factory


def _check_debug(factory, weighted: bool) -> None:
  if bool(getattr(factory, 'is_weighted', not weighted)) != weighted:
    raise TypeError(
        'debug_measurements_fn should return the same type: a '
        f'{"weighted" if weighted else "unweighted"} aggregation factory; got {factory!r}.'
    )


def compression_aggregator(
    *,
    zeroing: bool = True,
    clipping: bool = True,
    weighted: bool = True,
    debug_measurements_fn: Callable | None = None,
    **kwargs,
):
  """Adaptive zeroing and clipping around a mean of quantized values (``tff.learning``'s).

  Zeroes extremely large values and clips to a moderately high L2 norm (TFF's defaults, as
  :func:`robust_aggregator`); then, after weighting in the mean, the weighted values' tensors with
  more than 20,000 elements are uniformly quantized to 8 bits (Suresh et al. 2017,
  http://proceedings.mlr.press/v70/suresh17a/suresh17a.pdf), a configuration chosen in TFF so
  that compression does not hurt model quality in typical tasks.

  Args:
    zeroing: adaptive zeroing, against data corruption on clients.
    clipping: adaptive L2 clipping, against outliers (before the quantization's own range).
    weighted: ``MeanFactory`` (True) or ``UnweightedMeanFactory``.
    debug_measurements_fn: optional ``factory -> factory`` applied to the mean; it must keep the
      weightedness.
    **kwargs: passed to ``EncodedSumFactory.quantize_above_threshold``: ``stochastic``,
      ``min_max`` and ``seed`` (the rounding keys' seed; not in TFF, whose rounding is unseeded).

  Returns:
    An aggregation factory. Measurements, weighted: ``{zeroing: {clipping: {mean_value:
    {uniform_quantization: (), bits_per_client, float32_bits_per_client, compression_ratio},
    mean_weight: (), num_clients_non_finite}, clipping_norm, clipped_count}, zeroing_norm,
    zeroed_count}``.

  Raises:
    TypeError: when ``debug_measurements_fn`` changes the weightedness, or an unknown keyword.
  """
  value_sum = EncodedSumFactory.quantize_above_threshold(
      quantization_bits=8, threshold=20000, **kwargs
  )
  factory = MeanFactory(value_sum) if weighted else UnweightedMeanFactory(value_sum)
  return _robust_around(factory, weighted=weighted, zeroing=zeroing, clipping=clipping,
                        debug_measurements_fn=debug_measurements_fn)


def secure_aggregator(*, zeroing: bool = True, clipping: bool = True, weighted: bool = True):
  """Adaptive zeroing and clipping around a securely summed mean (``tff.learning``'s).

  Zeroes extremely large values and clips to a moderately high norm, then sums the weighted
  values with secure aggregation (Bonawitz et al. 2017), simulated by ``SecureSumFactory``: each
  coordinate is clipped to the adaptive bound and quantized to 32 bits before the sum.

  Args:
    zeroing: adaptive zeroing, against data corruption.
    clipping: adaptive L2 clipping (before the per-coordinate clipping of the secure sum).
    weighted: the weighted mean (True) or the unweighted one.

  Returns:
    An aggregation factory.
  """
  secure_clip_bound = PrivateQuantileEstimationProcess.no_noise(
      initial_estimate=50.0, target_quantile=0.95, learning_rate=1.0, multiplier=2.0
  )
  value_sum = SecureSumFactory(secure_clip_bound)
  if weighted:
    # 2**20 - 1: a power of 2 minus one encodes integer-valued float weights up to ~1e6 exactly.
    factory = MeanFactory(
        value_sum_factory=value_sum,
        weight_sum_factory=SecureSumFactory(float(2**20 - 1), 0.0),
    )
  else:
    factory = UnweightedMeanFactory(value_sum_factory=value_sum, count_sum_factory=_secure_count())
  return _robust_around(factory, weighted=weighted, zeroing=zeroing, clipping=clipping,
                        secure_estimation=True)
