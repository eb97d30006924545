"""Client-level contribution bounding: how much one client may add to a federated statistic.

Every analytic in this package takes each client's items as ``[max_items, ...]`` with an item mask,
and bounds the client's influence before anything leaves the client:

- ``distinct``: a client counts each distinct item once (heavy hitters count *clients* holding an
  item, not occurrences);
- ``max_items_per_client = k``: only the client's first ``k`` (distinct) valid items contribute.

Bounding a client's contribution is what makes a statistic robust to a single prolific client and
is the sensitivity bound differential privacy would need. The rule is deterministic (first ``k`` in
the client's order), so tests can reproduce it exactly with NumPy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fedjax_like.core.intrinsics import federated_map
from fedjax_like.core.values import FederatedValue, expect_per_client


def bound_contributions(
    items: jax.Array,
    keep: jax.Array,
    max_items: int | None = None,
    distinct: bool = False,
) -> jax.Array:
  """One client's items that may contribute.

  Args:
    items: ``[m, ...]`` the client's items (compared whole for ``distinct``).
    keep: bool ``[m]``: True for a real item.
    max_items: keep at most this many (after de-duplication); None keeps all.
    distinct: drop an item equal to an earlier kept-or-real item.

  Returns:
    bool ``[m]``.
  """
  keep = keep.astype(bool)
  if distinct:
    flat = items.reshape(items.shape[0], -1)
    equal = jnp.all(flat[:, None, :] == flat[None, :, :], axis=-1)  # [m, m]
    earlier = jnp.tril(jnp.ones_like(equal), k=-1)
    duplicate = jnp.any(equal & earlier & keep[None, :], axis=1)
    keep = keep & ~duplicate
  if max_items is not None:
    keep = keep & (jnp.cumsum(keep.astype(jnp.int32)) <= max_items)
  return keep


def client_items(
    op: str,
    items: FederatedValue,
    item_mask: FederatedValue | None,
    max_items: int | None,
    distinct: bool = False,
) -> FederatedValue:
  """``{<items, keep>}@CLIENTS``: the clients' items with the bounded-contribution mask."""
  expect_per_client(op, items)
  if max_items is not None and (not isinstance(max_items, int) or max_items < 1):
    raise ValueError(
        f'{op}: max_items_per_client must be a positive int or None; got {max_items!r}.'
    )
  if item_mask is None:
    return federated_map(
        lambda x: (x, bound_contributions(x, jnp.ones(x.shape[:1], bool), max_items, distinct)),
        items,
    )
  expect_per_client(f'{op} (item_mask)', item_mask)
  return federated_map(
      lambda x, m: (x, bound_contributions(x, m, max_items, distinct)), (items, item_mask)
  )
