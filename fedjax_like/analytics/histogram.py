"""Federated histogram, and the mean of items, over client values with client-level clipping.

Each client holds a ragged list of scalar values (``[max_items]`` plus an item mask). Clients bin
their own values and send only the bin counts; the server sums them (one ``federated_sum``). With
no noise added the result is *exact*: it equals ``np.histogram`` of the pooled, contribution-bounded
values (values outside the edges are clamped into the first and last bins, so every contributed
value is counted once).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_like.analytics.clipping import client_items
from fedjax_like.core.intrinsics import (
    federated_broadcast,
    federated_map,
    federated_sum,
    federated_value,
)
from fedjax_like.core.placements import SERVER
from fedjax_like.core.values import FederatedValue


def _bin_index(values: jax.Array, edges: jax.Array) -> jax.Array:
  """``np.histogram``'s bins: ``[e_i, e_{i+1})``, the last one closed; out-of-range clamped."""
  num_bins = edges.shape[0] - 1
  index = jnp.searchsorted(edges, values, side='right') - 1
  return jnp.clip(index, 0, num_bins - 1)


def _float32_edges(bin_edges) -> jax.Array:
  """Edges for comparing float32 values exactly as ``np.histogram`` compares them in float64.

  For a float32 ``x`` and a float64 edge ``e``, ``e <= x`` holds exactly when ``e32 <= x``, where
  ``e32`` is the smallest float32 not below ``e``; so host edges are rounded up, not to nearest.
  """
  if isinstance(bin_edges, jax.core.Tracer):
    return jnp.asarray(bin_edges, jnp.float32)
  wide = np.asarray(bin_edges, np.float64)
  edges = wide.astype(np.float32)
  below = edges.astype(np.float64) < wide
  edges[below] = np.nextafter(edges[below], np.float32(np.inf))
  return jnp.asarray(edges)


def federated_histogram(
    values: FederatedValue,
    bin_edges: Sequence[float] | jax.Array,
    item_mask: FederatedValue | None = None,
    *,
    max_items_per_client: int | None = None,
) -> FederatedValue:
  """Counts the clients' values per bin: ``{float32[m]}@CLIENTS -> int32[num_bins]@SERVER``.

  Args:
    values: per-client values ``[num_clients, max_items]``.
    bin_edges: increasing ``[num_bins + 1]`` edges, as for ``np.histogram``.
    item_mask: per-client bool ``[num_clients, max_items]``; False marks padding items.
    max_items_per_client: each client contributes at most its first ``k`` valid values.

  Returns:
    ``int32[num_bins]@SERVER``, exactly ``np.histogram(clip(pooled, e_0, e_last), bin_edges)``.
  """
  edges = _float32_edges(bin_edges)
  if edges.ndim != 1 or edges.shape[0] < 2:
    raise ValueError(f'bin_edges must be 1-D with at least 2 edges; got shape {edges.shape}.')
  data = client_items('federated_histogram', values, item_mask, max_items_per_client)
  num_bins = edges.shape[0] - 1

  def client_counts(item_and_keep, client_edges):
    x, keep = item_and_keep
    index = _bin_index(x.astype(jnp.float32), client_edges)
    return jnp.zeros((num_bins,), jnp.int32).at[index].add(keep.astype(jnp.int32))

  edges_at_clients = federated_broadcast(federated_value(edges, SERVER))
  return federated_sum(federated_map(client_counts, (data, edges_at_clients)))


def federated_item_mean(
    values: FederatedValue,
    item_mask: FederatedValue | None = None,
    *,
    clip_range: tuple[float, float] | None = None,
    max_items_per_client: int | None = None,
) -> FederatedValue:
  """The mean of all contributed values: ``{float32[m]}@CLIENTS -> float32@SERVER``.

  Clients send ``(sum of their clipped values, their count)``; the server divides once. Exact (up
  to float32 summation) against ``np.mean`` of the pooled, clipped, contribution-bounded values.
  With ``clip_range = (lo, hi)`` and ``k`` items per client, one client moves the sum by at most
  ``k * max(|lo|, |hi|)``: the sensitivity a DP mechanism would calibrate to.

  Args:
    values: per-client values ``[num_clients, max_items]``.
    item_mask: per-client bool ``[num_clients, max_items]``.
    clip_range: clamp each value into ``[lo, hi]``; None leaves values as they are.
    max_items_per_client: each client contributes at most its first ``k`` valid values.

  Returns:
    ``float32@SERVER`` (0 when nothing was contributed).
  """
  data = client_items('federated_item_mean', values, item_mask, max_items_per_client)

  def client_sums(item_and_keep):
    x, keep = item_and_keep
    x = x.astype(jnp.float32)
    if clip_range is not None:
      x = jnp.clip(x, clip_range[0], clip_range[1])
    return jnp.sum(jnp.where(keep, x, 0.0)), jnp.sum(keep.astype(jnp.float32))

  total, count = federated_sum(federated_map(client_sums, data)).value
  return FederatedValue(total / jnp.maximum(count, 1.0), SERVER)
