"""Federated heavy hitters over integer items with a count sketch.

Charikar, Chen and Farach-Colton, 2002 ("Finding Frequent Items in Data Streams"). Each client
adds ``sign_j(x)`` at ``bucket_j(x)`` of row ``j`` of a ``[depth, width]`` table for each of its
(distinct, contribution-bounded) items ``x``; the sketch is linear, so the server's
``federated_sum`` of the clients' tables is the sketch of the whole population. The server then
estimates every item of the public domain ``[0, domain_size)`` as
``median_j sign_j(x) * S[j, bucket_j(x)]`` and reports the ``k`` largest.

Error bound. Row ``j`` estimates ``c_x`` without bias and with variance at most
``||c||_2**2 / width`` (``c`` the vector of true counts). By Chebyshev a row errs by more than
``eps = 3 * ||c||_2 / sqrt(width)`` with probability at most 1/9, and the median errs only if half
the rows do: probability ``<= C(depth, depth//2 + 1) * 9**-(depth//2 + 1)`` (under 0.6% for
depth 7). So when the k-th and (k+1)-th true counts differ by more than ``2 * eps``, the reported
top ``k`` are the true top ``k`` with that probability per item. Hashes are multiply-shift
(Dietzfelbinger et al., 1997) with odd multipliers drawn from ``seed``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_like.analytics.clipping import client_items
from fedjax_like.core.intrinsics import federated_map, federated_sum
from fedjax_like.core.placements import SERVER
from fedjax_like.core.values import FederatedValue


class CountSketchHeavyHitters(NamedTuple):
  """The result at the server.

  Attributes:
    items: ``int32[k]`` the most frequent items by estimate, most frequent first.
    estimates: ``float32[k]`` their estimated counts.
    sketch: ``int32[depth, width]`` the population's sketch (to query other items).
  """

  items: jax.Array
  estimates: jax.Array
  sketch: jax.Array


def count_sketch_error_bound(counts_l2: float, width: int) -> float:
  """``eps = 3 * ||c||_2 / sqrt(width)``: a row errs by more than eps with probability < 1/9."""
  return 3.0 * counts_l2 / math.sqrt(width)


def _hash_params(depth: int, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  params = rng.integers(0, 2**32, size=(4, depth), dtype=np.uint64).astype(np.uint32)
  params[0] |= 1  # odd multipliers
  params[2] |= 1
  return params


def _buckets_and_signs(items: jax.Array, params: jax.Array, log_width: int):
  """``int32[..., depth]`` buckets and ``int32[..., depth]`` signs of ``items``."""
  x = items.astype(jnp.uint32)[..., None]
  bucket = (params[0] * x + params[1]) >> (32 - log_width)
  sign = ((params[2] * x + params[3]) >> 31).astype(jnp.int32) * 2 - 1
  return bucket.astype(jnp.int32), sign


def count_sketch_heavy_hitters(
    items: FederatedValue,
    item_mask: FederatedValue | None = None,
    *,
    domain_size: int,
    k: int = 10,
    width: int = 1024,
    depth: int = 7,
    seed: int = 0,
    max_items_per_client: int | None = None,
) -> FederatedValue:
  """The ``k`` most frequent items: ``{int32[m]}@CLIENTS -> CountSketchHeavyHitters@SERVER``.

  Args:
    items: per-client item ids ``[num_clients, max_items]`` in ``[0, domain_size)``.
    item_mask: per-client bool ``[num_clients, max_items]``.
    domain_size: the public domain the server queries.
    k: how many to report.
    width: buckets per row, a power of two.
    depth: rows (independent hashes); the median over rows tames collisions.
    seed: draws the hash functions (public, shared by clients and server).
    max_items_per_client: each client counts at most its first ``k'`` distinct items.
  """
  log_width = int(math.log2(width))
  if 2**log_width != width:
    raise ValueError(f'count_sketch_heavy_hitters: width must be a power of two; got {width}.')
  params = jnp.asarray(_hash_params(depth, seed))
  data = client_items('count_sketch_heavy_hitters', items, item_mask, max_items_per_client, True)

  def client_sketch(d):
    x, keep = d
    bucket, sign = _buckets_and_signs(x, params, log_width)  # [m, depth]
    rows = jnp.broadcast_to(jnp.arange(depth), bucket.shape)
    flat = rows * width + bucket
    values = sign * keep[:, None].astype(jnp.int32)
    return jnp.zeros((depth * width,), jnp.int32).at[flat].add(values).reshape(depth, width)

  sketch = federated_sum(federated_map(client_sketch, data)).value
  bucket, sign = _buckets_and_signs(jnp.arange(domain_size), params, log_width)  # [D, depth]
  per_row = sign * sketch[jnp.arange(depth)[None, :], bucket]
  estimates = jnp.median(per_row.astype(jnp.float32), axis=1)
  top, index = jax.lax.top_k(estimates, k)
  return FederatedValue(CountSketchHeavyHitters(index.astype(jnp.int32), top, sketch), SERVER)
