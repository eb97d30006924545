"""The geometric median of client values by smoothed Weiszfeld passes (RFA), against poisoning.

Pillutla, Kakade, Harchaoui (2022), "Robust Aggregation for Federated Learning", IEEE TSP,
https://arxiv.org/abs/1912.13445. With client values ``x_i`` (each whole update pytree a point)
and weights ``a_i`` (the update weights, or 1 each when unweighted), RFA approximates

    v* = argmin_v  sum_i a_i ||v - x_i||_2

by the smoothed Weiszfeld algorithm, each pass one weighted mean with re-weighted clients:

    v_0     = sum_i a_i x_i / sum_i a_i                       (the plain weighted mean)
    b_i     = a_i / max(eps, ||v_t - x_i||_2)
    v_{t+1} = sum_i b_i x_i / sum_i b_i                       (t = 0 .. num_iters - 1)

``eps`` (the paper's smoothing ``nu``) keeps a weight finite when ``v_t`` sits on a client's value.
The defaults, ``num_iters=4`` and ``eps=1e-6``, are the RFA reference code's five communication
passes (the mean, then four Weiszfeld steps) and its tolerance. Each pass is written with the
Federated Core's intrinsics (``federated_broadcast`` of ``v_t``, ``federated_map`` of ``b_i``,
``federated_mean``), as RFA's secure-aggregation-friendly form.

Padding clients and clients whose value (or weight) is not finite get weight 0 (the latter are
counted); a round with no valid client (or total weight 0) gives zeros. Measurements
``{num_clients, num_clients_non_finite: int32, objective: float32}``, ``objective`` being
``sum_i a_i ||v - x_i|| / sum_i a_i`` at the returned ``v`` (the weighted mean distance).

**Memory**: the client values are materialized once as ``[clients, ...]`` before the passes (so
the clients' own work runs once, not once per pass): O(cohort x model); the aggregator has no
map-reduce form, and the engine's memory check names it when a cohort does not fit.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from fedjax_like.aggregators.factory import (
    AggregationProcess,
    MeasuredProcessOutput,
    _check_clients_value,
    _check_weight,
    ready,
    tensor_type,
)
from fedjax_like.aggregators.robust import check_float_value_type, stacked_valid
from fedjax_like.core import (
    CLIENTS,
    FederatedValue,
    federated_broadcast,
    federated_map,
    federated_mean,
    federated_sum,
)

PyTree = Any
_F32 = jnp.float32


def _distance(point: PyTree, center: PyTree) -> jax.Array:
  """``||point - center||_2`` over all leaves, in float32."""
  total = sum(
      (jnp.sum(jnp.square(a.astype(_F32) - b.astype(_F32)))
       for a, b in zip(jax.tree.leaves(point), jax.tree.leaves(center))),
      jnp.zeros((), _F32),
  )
  return jnp.sqrt(total)


class GeometricMedianFactory:
  """The approximate geometric median of client values, RFA's smoothed Weiszfeld (not a sum).

  Args:
    num_iters: Weiszfeld steps after the initial weighted mean (1 or more; default 4).
    eps: the smoothing ``nu > 0`` (default 1e-6): distances below it count as ``eps``.
    weighted: True (default, as RFA: ``a_i`` the clients' update weights, e.g. example counts)
      or False (``a_i = 1``).
  """

  def __init__(self, num_iters: int = 4, eps: float = 1e-6, weighted: bool = True):
    if isinstance(num_iters, bool) or not isinstance(num_iters, int):
      raise TypeError(f'num_iters must be an int; got {type(num_iters).__name__}.')
    if num_iters < 1:
      raise ValueError(f'num_iters must be at least 1 (Weiszfeld steps); got {num_iters}.')
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
      raise TypeError(f'eps must be a float; got {type(eps).__name__}.')
    if not (eps > 0 and math.isfinite(eps)):
      raise ValueError(f'eps must be positive and finite (the smoothing nu); got {eps}.')
    self.num_iters = num_iters
    self.eps = float(eps)
    self.is_weighted = bool(weighted)

  def create(self, value_type: PyTree) -> AggregationProcess:
    """The process over values of ``value_type`` (a pytree of floating types)."""
    value_type = tensor_type(value_type)
    check_float_value_type(value_type, 'GeometricMedianFactory')
    num_iters, eps, weighted = self.num_iters, self.eps, self.is_weighted
    name = 'geometric_median'

    def next_fn(state, value: FederatedValue, weight: FederatedValue | None = None):
      _check_clients_value(name, 'the value', value, value_type)
      if weighted:
        _check_weight(name, weight, ' (or use GeometricMedianFactory(weighted=False))')
        stacked, valid, counts, alphas = stacked_valid(value, weight)
      else:
        stacked, valid, counts, _ = stacked_valid(value)
        alphas = valid.astype(_F32)
      points = FederatedValue(stacked, CLIENTS, mask=value.mask, engine=value.engine,
                              scope=value.scope)
      alpha = FederatedValue(alphas, CLIENTS, mask=value.mask, engine=value.engine,
                             scope=value.scope)
      median = federated_mean(points, alpha)
      for _ in range(num_iters):
        center = federated_broadcast(median)
        beta = federated_map(
            lambda a, x, v: a / jnp.maximum(eps, _distance(x, v)), (alpha, points, center)
        )
        median = federated_mean(points, beta)
      center = federated_broadcast(median)
      spread = federated_sum(federated_map(
          lambda a, x, v: (a * _distance(x, v), a), (alpha, points, center)
      ))
      objective = federated_map(
          lambda s: jnp.where(s[1] > 0, s[0] / jnp.maximum(s[1], 1e-30), 0.0), spread
      )
      return MeasuredProcessOutput(state, median, dict(counts, objective=ready(objective)))

    return AggregationProcess(lambda: (), next_fn, value_type, weighted, None, name)

  def __repr__(self) -> str:
    return (f'GeometricMedianFactory(num_iters={self.num_iters}, eps={self.eps}, '
            f'weighted={self.is_weighted})')
