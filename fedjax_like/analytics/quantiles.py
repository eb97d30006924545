"""Federated quantiles by binary search with federated counts.

The server holds, for each requested quantile ``q``, an interval ``[lo, hi]`` of the value range.
Each round it broadcasts the midpoints; each client answers how many of its (contribution-bounded)
values are ``<= mid``; the server sums the counts (one ``federated_sum``) and keeps the half that
contains the quantile. All quantiles are searched at once, ``num_rounds`` rounds in all.

Error bound. Let ``x_q`` be the inverted-CDF quantile of the pooled contributed values clamped into
``value_range = (a, b)`` -- the smallest ``x`` with ``count(values <= x) >= q * N``, i.e.
``np.quantile(values, q, method='inverted_cdf')``. The search keeps the invariant
``x_q in [lo, hi]`` (``count(<= hi) >= qN``, and ``lo = a`` or ``count(<= lo) < qN``) and halves
the interval each round, so the estimate ``hi`` satisfies::

    |estimate - x_q| <= (b - a) / 2**num_rounds      (plus float32 rounding of the midpoints)

It is deterministic: no sampling, no noise. Values outside ``(a, b)`` are clamped into it.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from fedjax_like.analytics.clipping import client_items
from fedjax_like.core.intrinsics import (
    federated_broadcast,
    federated_map,
    federated_sum,
    federated_value,
)
from fedjax_like.core.placements import SERVER
from fedjax_like.core.values import FederatedValue


def quantile_error_bound(value_range: tuple[float, float], num_rounds: int) -> float:
  """The bound ``(b - a) / 2**num_rounds`` on ``|estimate - x_q|`` (see the module docstring)."""
  return (value_range[1] - value_range[0]) / 2.0**num_rounds


def federated_quantiles(
    values: FederatedValue,
    quantiles: Sequence[float] | jax.Array,
    value_range: tuple[float, float],
    item_mask: FederatedValue | None = None,
    *,
    num_rounds: int = 24,
    max_items_per_client: int | None = None,
) -> FederatedValue:
  """Estimates quantiles of the clients' values: ``{float32[m]}@CLIENTS -> float32[Q]@SERVER``.

  Args:
    values: per-client values ``[num_clients, max_items]``.
    quantiles: ``[Q]`` levels in ``(0, 1]``.
    value_range: ``(a, b)``: the public range searched; values are clamped into it.
    item_mask: per-client bool ``[num_clients, max_items]``.
    num_rounds: rounds of bisection (communication rounds); the error halves with each.
    max_items_per_client: each client contributes at most its first ``k`` valid values.

  Returns:
    ``float32[Q]@SERVER``, each within ``quantile_error_bound(value_range, num_rounds)`` of the
    inverted-CDF quantile of the pooled contributed values.
  """
  levels = jnp.asarray(quantiles, jnp.float32).reshape(-1)
  low, high = float(value_range[0]), float(value_range[1])
  if not low < high:
    raise ValueError(f'value_range must be (a, b) with a < b; got {value_range}.')
  data = client_items('federated_quantiles', values, item_mask, max_items_per_client)
  data = federated_map(lambda d: (jnp.clip(d[0].astype(jnp.float32), low, high), d[1]), data)
  total = federated_sum(federated_map(lambda d: jnp.sum(d[1].astype(jnp.int32)), data)).value
  # The inverted-CDF quantile is the smallest x with count(<= x) >= ceil(q * N). q * N is formed in
  # float32, so a whole number can come out a hair above it (0.3 * 100 = 30.000002): snap values
  # within float32 rounding of an integer to it before taking the ceiling.
  exact = levels * total.astype(jnp.float32)
  nearest = jnp.round(exact)
  tolerance = 8 * jnp.finfo(jnp.float32).eps * jnp.maximum(total.astype(jnp.float32), 1.0)
  needed = jnp.ceil(jnp.where(jnp.abs(exact - nearest) <= tolerance, nearest, exact))
  needed = needed.astype(jnp.int32)

  def client_counts(d, thresholds):
    x, keep = d
    below = (x[:, None] <= thresholds[None, :]) & keep[:, None]
    return jnp.sum(below.astype(jnp.int32), axis=0)

  def bisect(_, interval):
    lo, hi = interval
    mid = 0.5 * (lo + hi)
    at_clients = federated_broadcast(federated_value(mid, SERVER))
    counts = federated_sum(federated_map(client_counts, (data, at_clients))).value
    left = counts >= needed  # the quantile is <= mid
    return jnp.where(left, lo, mid), jnp.where(left, mid, hi)

  start = (jnp.full_like(levels, low), jnp.full_like(levels, high))
  _, estimate = jax.lax.fori_loop(0, num_rounds, bisect, start)
  return FederatedValue(estimate, SERVER)
