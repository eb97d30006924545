"""Pytree arithmetic: the vector operations a federated round is written in.

Model weights, deltas, optimizer states and metrics are pytrees of arrays. These functions treat a
pytree as one vector: add, subtract, scale, weighted mean, dot and global norm; ``sum_leading``
sums an array over its leading (cohort) axis. They are pure and jit-safe; all leaves of the trees
combined must have the same structure.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def add(a: PyTree, b: PyTree) -> PyTree:
  """``a + b`` leaf by leaf."""
  return jax.tree.map(jnp.add, a, b)


def sub(a: PyTree, b: PyTree) -> PyTree:
  """``a - b`` leaf by leaf."""
  return jax.tree.map(jnp.subtract, a, b)


def scale(tree: PyTree, factor) -> PyTree:
  """``factor * tree``; ``factor`` is a scalar (Python number or 0-d array)."""
  return jax.tree.map(lambda x: (factor * x).astype(x.dtype), tree)


def zeros_like(tree: PyTree) -> PyTree:
  return jax.tree.map(jnp.zeros_like, tree)


def where(condition, on_true: PyTree, on_false: PyTree) -> PyTree:
  """Picks ``on_true`` or ``on_false`` for the whole tree by a scalar boolean ``condition``."""
  return jax.tree.map(lambda t, f: jnp.where(condition, t, f), on_true, on_false)


def dot(a: PyTree, b: PyTree) -> jax.Array:
  """The inner product of two trees seen as flat vectors."""
  leaves = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.vdot(x, y), a, b))
  return sum(leaves, jnp.zeros((), jnp.float32))


def global_norm(tree: PyTree) -> jax.Array:
  """The L2 norm of all leaves together."""
  leaves = jax.tree.leaves(tree)
  return jnp.sqrt(sum((jnp.sum(jnp.square(x)) for x in leaves), jnp.zeros((), jnp.float32)))


def all_finite(tree: PyTree) -> jax.Array:
  """True when every element of every leaf is finite."""
  leaves = jax.tree.leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.array(True)


def sum_leading(x: jax.Array) -> jax.Array:
  """``x.sum(axis=0)`` for ``x`` of shape ``[n, ...]``: the sum over a cohort axis.

  On CPU a floating array of rank 2 or more is summed by pairwise halving (``x[:h] + x[h:2h]``
  until one row is left): elementwise adds, which XLA:CPU runs with its own emitters. A fused sum
  over a leading (non-minor) axis goes to XLA:CPU's YNNPACK library reduction instead, which runs
  it tens of times slower (benchmarks/RESULTS.md). Elsewhere, for vectors and for integer or bool
  arrays it is ``jnp.sum`` (same result dtype). Pairwise order rounds differently from a
  left-to-right sum (more accurately).
  """
  floating = jnp.issubdtype(x.dtype, jnp.inexact)
  if not floating or x.ndim < 2 or x.shape[0] < 2 or jax.default_backend() != 'cpu':
    return jnp.sum(x, axis=0)  # bools and small ints promote as jnp.sum promotes them
  while x.shape[0] > 1:
    half = x.shape[0] // 2
    pairs = x[:half] + x[half:2 * half]
    x = jnp.concatenate([pairs, x[2 * half:]]) if x.shape[0] % 2 else pairs
  return x[0]


def weighted_sum(stacked: PyTree, weights: jax.Array) -> PyTree:
  """``sum_i weights[i] * stacked[i]`` over the leading (cohort) axis.

  Args:
    stacked: a pytree whose leaves are ``[n, ...]``.
    weights: ``[n]``.
  """

  def one(x):
    return sum_leading(weights.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1)) * x)

  return jax.tree.map(one, stacked)


def divide_by_total(sums: PyTree, total) -> PyTree:
  """``sums / total`` leaf by leaf, and zeros when ``total`` is 0 (a mean over nothing)."""
  safe = jnp.where(total > 0, total, 1.0)
  return jax.tree.map(lambda s: s / jnp.asarray(safe).astype(s.dtype), sums)


def weighted_mean(stacked: PyTree, weights: jax.Array) -> PyTree:
  """``sum_i w_i x_i / sum_i w_i`` over the leading axis; zero when all weights are zero."""
  return divide_by_total(weighted_sum(stacked, weights), jnp.sum(weights))
