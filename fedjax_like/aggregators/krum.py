"""Krum and Multi-Krum: the client update closest to its neighbours, against Byzantine clients.

Blanchard, El Mhamdi, Guerraoui, Stainer (2017), "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent", https://papers.nips.cc/paper/6617. For the ``n`` valid clients of a
round, at most ``f`` of them Byzantine, each client's value ``x_i`` (the whole update pytree,
flattened) gets the score

    s(i) = sum_{j in N_i} ||x_i - x_j||^2,   N_i: the n - f - 2 clients closest to x_i (j != i)

Krum returns the value of the client with the lowest score; Multi-Krum (``num_selected = m``)
the plain average of the ``m`` values with the lowest scores (m = 1 is Krum, m = n the mean).
Ties go to the client that comes first in the cohort. The guarantee needs ``n > 2f + 2``.

Unweighted (``is_weighted = False``: use it with an unweighted builder such as
``build_unweighted_fed_avg``). Padding clients and clients whose value is not finite are left out
(and the latter counted): they are nobody's neighbour and are never selected, and ``n`` counts only
the valid clients. A round whose cohort (padding included) has ``n <= 2f + 2`` clients is refused
when the round is traced; when fewer valid clients remain than the guarantee needs, the
neighbourhood shrinks (``max(n - f - 2, 1)`` neighbours, fewer when fewer exist) and Krum still
picks among the valid clients. A round with no valid client gives zeros.

Measurements ``{num_clients, num_clients_non_finite, num_selected: int32, selected:
bool[clients]}`` (``selected`` in the cohort's order as ``next`` received it).

**Memory**: Krum sees the stacked client values ``[clients, ...]`` (materialized from the
per-client value ``next`` receives), so its memory is O(cohort x model), plus the ``[clients,
clients]`` distance matrix; it has no map-reduce form, and the engine's memory check names it when
a cohort does not fit. Distances come from Gram matrices (matmuls: O(cohort^2 x model) work at
BLAS speed) in float32, centred inside the honest clients so that huge attacker values do not
cancel away the small honest distances (see :func:`pairwise_sq_distances`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from fedjax_like.aggregators.factory import (
    AggregationProcess,
    MeasuredProcessOutput,
    _check_clients_value,
    tensor_type,
)
from fedjax_like.aggregators.robust import check_float_value_type, stacked_valid
from fedjax_like.core import SERVER, FederatedValue, federated_value, tree

PyTree = Any


def _flat(stacked: PyTree) -> list[jax.Array]:
  """Each leaf as float32 ``[clients, elements]``."""
  return [jnp.asarray(x, jnp.float32).reshape(x.shape[0], -1) for x in jax.tree.leaves(stacked)]


def _gram_distances(leaves: list[jax.Array], center: list[jax.Array]) -> jax.Array:
  """``||x_i - x_j||^2`` from the Gram matrix of the points moved to ``center`` (float32)."""
  gram = 0.0
  for x, c in zip(leaves, center):
    y = x - c
    gram = gram + jnp.matmul(y, y.T, precision=jax.lax.Precision.HIGHEST)
  sq = jnp.diag(gram)
  distances = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)
  return jnp.where(jnp.eye(gram.shape[0], dtype=bool), 0.0, distances)


def pairwise_sq_distances(stacked: PyTree, valid: jax.Array) -> jax.Array:
  """``D[i, j] = ||x_i - x_j||^2`` over all leaves of ``stacked`` ``[clients, ...]``, float32.

  From Gram matrices (one matmul per leaf), in two passes, since ``|a|^2 + |b|^2 - 2 a.b`` loses
  the small distances between honest clients when the points sit far from the origin (or
  attackers pull the mean far away): a first pass centred on the valid clients' mean picks the
  valid client whose median distance to the others is smallest (never a far-off attacker), and
  the second pass is centred on that client, inside the honest cloud.
  """
  leaves = _flat(stacked)
  n = leaves[0].shape[0]
  weight = valid.astype(jnp.float32)
  total = jnp.maximum(jnp.sum(weight), 1.0)
  mean = [tree.sum_leading(x * weight[:, None]) / total for x in leaves]
  rough = _gram_distances(leaves, mean)
  others = valid[None, :] & valid[:, None] & ~jnp.eye(n, dtype=bool)
  typical = jnp.nanmedian(jnp.where(others, rough, jnp.nan), axis=1)
  center = jnp.argmin(jnp.where(valid & jnp.isfinite(typical), typical, jnp.inf))
  return _gram_distances(leaves, [x[center] for x in leaves])


def krum_scores(distances: jax.Array, valid: jax.Array, num_byzantine: int) -> jax.Array:
  """Each valid client's Krum score from the squared distances ``[clients, clients]``.

  ``s(i)`` sums the ``max(n - f - 2, 1)`` smallest distances from ``i`` to the other valid
  clients (``n`` valid clients); invalid clients score ``+inf``.
  """
  n_clients = distances.shape[0]
  n = jnp.sum(valid.astype(jnp.int32))
  neighbours = jnp.maximum(n - num_byzantine - 2, 1)
  others = valid[None, :] & valid[:, None] & ~jnp.eye(n_clients, dtype=bool)
  ordered = jnp.sort(jnp.where(others, distances, jnp.inf), axis=1)
  rank = jnp.arange(n_clients)[None, :]
  take = (rank < neighbours) & jnp.isfinite(ordered)
  scores = jnp.sum(jnp.where(take, ordered, 0.0), axis=1)
  return jnp.where(valid, scores, jnp.inf)


def multi_krum(stacked: PyTree, valid: jax.Array, num_byzantine: int, num_selected: int):
  """Multi-Krum over ``stacked`` ``[clients, ...]``: ``(the average of the selected values,
  selected bool[clients])``; zeros when no client is valid."""
  scores = krum_scores(pairwise_sq_distances(stacked, valid), valid, num_byzantine)
  # Valid clients first (a valid score may overflow to inf), then by score, ties by position.
  key = jnp.where(valid, jnp.minimum(scores, jnp.finfo(jnp.float32).max), jnp.inf)
  order = jnp.argsort(key, stable=True)
  rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]))
  selected = valid & (rank < num_selected)
  count = jnp.sum(selected.astype(jnp.float32))

  def average(x):
    shape = (-1,) + (1,) * (x.ndim - 1)
    total = tree.sum_leading(jnp.where(selected.reshape(shape), x.astype(jnp.float32), 0.0))
    return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0).astype(x.dtype)

  return jax.tree.map(average, stacked), selected


def _check_count(value, what: str, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int):
    raise TypeError(f'{what} must be an int; got {type(value).__name__}.')
  if value < minimum:
    raise ValueError(f'{what} must be at least {minimum}; got {value}.')
  return value


class KrumFactory:
  """Krum (``num_selected=1``) and Multi-Krum over client values (unweighted; not a sum).

  Args:
    num_byzantine: ``f``, the number of Byzantine clients to tolerate (0 or more); a cohort needs
      more than ``2f + 2`` clients.
    num_selected: ``m``, how many of the best-scored clients are averaged (1: Krum).
  """

  is_weighted = False

  def __init__(self, num_byzantine: int, num_selected: int = 1):
    self.num_byzantine = _check_count(num_byzantine, 'num_byzantine', 0)
    self.num_selected = _check_count(num_selected, 'num_selected', 1)

  def create(self, value_type: PyTree) -> AggregationProcess:
    """The process over values of ``value_type`` (a pytree of floating types)."""
    value_type = tensor_type(value_type)
    check_float_value_type(value_type, 'KrumFactory')
    f, m = self.num_byzantine, self.num_selected
    name = 'krum' if m == 1 else 'multi_krum'

    def next_fn(state, value: FederatedValue, weight: FederatedValue | None = None):
      del weight  # unweighted
      _check_clients_value(name, 'the value', value, value_type)
      n = value.num_clients
      if n is not None and n <= 2 * f + 2:
        raise ValueError(
            f'KrumFactory(num_byzantine={f}) needs more than 2f + 2 = {2 * f + 2} clients per '
            f'round; the cohort has {n}. Sample more clients or lower num_byzantine.'
        )
      stacked, valid, measurements, _ = stacked_valid(value)
      result, selected = multi_krum(stacked, valid, f, m)
      measurements = dict(
          measurements, num_selected=jnp.sum(selected.astype(jnp.int32)), selected=selected
      )
      return MeasuredProcessOutput(state, federated_value(result, SERVER), measurements)

    return AggregationProcess(lambda: (), next_fn, value_type, False, None, name)

  def __repr__(self) -> str:
    return f'KrumFactory(num_byzantine={self.num_byzantine}, num_selected={self.num_selected})'
