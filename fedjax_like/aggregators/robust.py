"""Robust aggregators that are not sums: coordinate-wise median and trimmed mean.

Against poisoned clients (Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates", https://arxiv.org/abs/1803.01498). For the ``n`` valid clients of a round and
each coordinate ``j`` separately, with ``x_(1)j <= ... <= x_(n)j`` the sorted values:

    median_j       = x_((n+1)/2)j                      (n odd)
                   = (x_(n/2)j + x_(n/2+1)j) / 2       (n even)
    trimmed_mean_j = 1/(n - 2k) sum_{r=k+1}^{n-k} x_(r)j,   k = floor(trim_fraction * n)

Both are unweighted (``is_weighted = False``: use them with an unweighted builder such as
``build_unweighted_fed_avg``). A client whose value is not finite is left out (and counted), as are
padding clients; a round with no valid client gives zeros. Measurements:
``{num_clients: valid clients, num_clients_non_finite: int32}``.

They see the stacked client values ``[clients, ...]`` (materialized from the per-client value the
``next`` receives): memory is O(cohort x model), and they have no map-reduce form, so a learning
process runs its clients materialized and then calls ``next``. Each coordinate's values are sorted
over the clients by a bitonic sorting network (:func:`sort_over_clients`: vectorized min/max stages,
several times faster on CPU than XLA's comparator sort along the client axis).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_like.aggregators.factory import (
    AggregationProcess,
    MeasuredProcessOutput,
    _check_clients_value,
    format_type,
    tensor_type,
)
from fedjax_like.core import SERVER, FederatedValue, federated_map, federated_value, tree

PyTree = Any


def sort_over_clients(x: jax.Array) -> jax.Array:
  """``x`` ``[clients, ...]`` sorted ascending along the client axis, by a bitonic network.

  The cohort is padded with ``+inf`` to a power of 2 ``m``, then ``log2(m) (log2(m) + 1) / 2``
  vectorized compare-exchange stages (each a reshape, a min and a max over the whole tensor) sort
  every coordinate at once. XLA's comparator sort along a leading axis is several times slower on
  CPU (see ``benchmarks/robust_cost.py``). ``x`` must hold no NaN.
  """
  n, rest = x.shape[0], x.shape[1:]
  size = 1 if n <= 1 else 1 << (n - 1).bit_length()
  if size != n:
    x = jnp.concatenate([x, jnp.full((size - n,) + rest, jnp.inf, x.dtype)])
  k = 2
  while k <= size:
    j = k // 2
    while j >= 1:
      # Pairs (i, i + j) for the i whose bit j is 0; ascending where bit k of i is 0.
      blocks = x.reshape((size // (2 * j), 2, j) + rest)
      low, high = blocks[:, 0], blocks[:, 1]
      ascending = ((np.arange(size // (2 * j)) * 2 * j) & k) == 0
      ascending = jnp.asarray(ascending).reshape((-1, 1) + (1,) * len(rest))
      smaller, larger = jnp.minimum(low, high), jnp.maximum(low, high)
      x = jnp.stack([jnp.where(ascending, smaller, larger), jnp.where(ascending, larger, smaller)],
                    axis=1).reshape((size,) + rest)
      j //= 2
    k *= 2
  return x[:n]


def _sorted_valid(stacked: jax.Array, valid: jax.Array) -> jax.Array:
  """Each coordinate's values sorted ascending over clients, invalid clients last (as +inf)."""
  shape = (-1,) + (1,) * (stacked.ndim - 1)
  x = jnp.where(valid.reshape(shape), stacked.astype(jnp.float32), jnp.inf)
  return sort_over_clients(x)


def coordinate_median(stacked: jax.Array, valid: jax.Array) -> jax.Array:
  """The median over the valid clients of each coordinate of ``stacked`` ``[clients, ...]``."""
  n = jnp.sum(valid.astype(jnp.int32))
  ordered = _sorted_valid(stacked, valid)
  low = jnp.take(ordered, jnp.maximum(n - 1, 0) // 2, axis=0)
  high = jnp.take(ordered, n // 2, axis=0, mode='clip')
  median = jnp.where(n > 0, (low + high) / 2, 0.0)
  return median.astype(stacked.dtype)


def coordinate_trimmed_mean(stacked: jax.Array, valid: jax.Array, trim_fraction: float):
  """Each coordinate's mean over valid clients without its ``floor(trim_fraction n)`` largest and
  smallest values."""
  n = jnp.sum(valid.astype(jnp.int32))
  k = jnp.floor(trim_fraction * n.astype(jnp.float32)).astype(jnp.int32)
  ordered = _sorted_valid(stacked, valid)
  rank = jnp.arange(stacked.shape[0]).reshape((-1,) + (1,) * (stacked.ndim - 1))
  keep = (rank >= k) & (rank < n - k)
  total = tree.sum_leading(jnp.where(keep, ordered, 0.0))
  kept = jnp.maximum(n - 2 * k, 1).astype(jnp.float32)
  return jnp.where(n > 0, total / kept, 0.0).astype(stacked.dtype)


def check_float_value_type(value_type: PyTree, who: str) -> None:
  """A TypeError unless every leaf of ``value_type`` is floating-point."""
  leaves = jax.tree.leaves(value_type)
  if not leaves or not all(jnp.issubdtype(x.dtype, jnp.floating) for x in leaves):
    raise TypeError(f'{who} needs floating-point values; got {format_type(value_type)}.')


def stacked_valid(
    value: FederatedValue, weight: FederatedValue | None = None
) -> tuple[PyTree, jax.Array, dict, jax.Array | None]:
  """Materializes per-client values as ``[clients, ...]`` and marks the clients to aggregate.

  Args:
    value: the per-client values.
    weight: optional per-client scalar weights, materialized together with the values (one
      engine pass even when both come from the same deferred client work).

  Returns:
    ``(stacked, valid, counts, weights)``: the stacked values with every non-finite client's value
    replaced by zeros; ``valid`` bool ``[clients]``, True for real (unmasked) clients whose value
    (and weight) is finite; ``counts`` the measurements ``{num_clients: valid clients,
    num_clients_non_finite: real clients left out for a NaN or inf}`` (int32); ``weights``
    float32 ``[clients]``, 0 where not valid (None without ``weight``).
  """

  def flag(v, w=None):
    finite = tree.all_finite(v)
    if w is not None:
      w = jnp.asarray(w, jnp.float32).reshape(())
      finite = finite & jnp.isfinite(w)
    return tree.where(finite, v, tree.zeros_like(v)), finite, (() if w is None else w)

  with_flag = federated_map(flag, value if weight is None else (value, weight))
  stacked, finite, weights = with_flag.value  # materialized: [clients, ...], [clients]
  real = jnp.ones_like(finite) if value.mask is None else value.mask
  valid = finite & real
  counts = {
      'num_clients': jnp.sum(valid.astype(jnp.int32)),
      'num_clients_non_finite': jnp.sum((real & ~finite).astype(jnp.int32)),
  }
  weights = None if weight is None else jnp.where(valid, weights, 0.0)
  return stacked, valid, counts, weights


def _coordinate_wise_process(value_type, reduce, name: str) -> AggregationProcess:
  value_type = tensor_type(value_type)

  def next_fn(state, value: FederatedValue, weight: FederatedValue | None = None):
    del weight  # unweighted
    _check_clients_value(name, 'the value', value, value_type)
    stacked, valid, measurements, _ = stacked_valid(value)
    result = jax.tree.map(lambda x: reduce(x, valid), stacked)
    return MeasuredProcessOutput(state, federated_value(result, SERVER), measurements)

  return AggregationProcess(lambda: (), next_fn, value_type, False, None, name)


class MedianFactory:
  """The coordinate-wise median over clients (unweighted; not a sum: O(cohort x model) memory)."""

  is_weighted = False

  def create(self, value_type: PyTree) -> AggregationProcess:
    """The median over values of ``value_type`` (a pytree of floating types)."""
    check_float_value_type(tensor_type(value_type), 'MedianFactory')
    return _coordinate_wise_process(value_type, coordinate_median, 'coordinate_median')

  def __repr__(self) -> str:
    return 'MedianFactory()'


class TrimmedMeanFactory:
  """The coordinate-wise trimmed mean over clients (unweighted; not a sum).

  Args:
    trim_fraction: ``beta`` in [0, 0.5): ``floor(beta n)`` values are removed from each end of
      every coordinate's sorted values before averaging (0 gives the plain mean).
  """

  is_weighted = False

  def __init__(self, trim_fraction: float = 0.1):
    if isinstance(trim_fraction, bool) or not isinstance(trim_fraction, (int, float)):
      raise TypeError(f'trim_fraction must be a float in [0, 0.5); got {trim_fraction!r}.')
    if not (0.0 <= trim_fraction < 0.5) or math.isnan(trim_fraction):
      raise ValueError(
          f'trim_fraction must be in [0, 0.5): the fraction of values removed from EACH end; got '
          f'{trim_fraction}. Use e.g. 0.1 to drop the 10% largest and 10% smallest.'
      )
    self.trim_fraction = float(trim_fraction)

  def create(self, value_type: PyTree) -> AggregationProcess:
    """The trimmed mean over values of ``value_type`` (a pytree of floating types)."""
    check_float_value_type(tensor_type(value_type), 'TrimmedMeanFactory')
    beta = self.trim_fraction
    return _coordinate_wise_process(
        value_type, lambda x, valid: coordinate_trimmed_mean(x, valid, beta), 'trimmed_mean'
    )

  def __repr__(self) -> str:
    return f'TrimmedMeanFactory(trim_fraction={self.trim_fraction})'
