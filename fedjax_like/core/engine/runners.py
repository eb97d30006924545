"""The runners: how a :class:`~.program.Program` runs over one device's clients.

``run_local(program, reduce, strategy, chunk, kind, groups, valid)`` computes every client's
output and either stacks it (``reduce='stack'``: ``[clients, ...]``) or sums it over the real
clients (``reduce='sum'``); ``map`` and ``sum`` are this one function. ``valid`` (bool
``[clients]``) marks the clients that count: padding clients added to fill a chunk or a device are
zeroed with ``where`` before any sum, so a NaN computed on padding never leaks.

=============  ==================================================================================
``vmap``       ``jax.vmap`` of the client function over the whole group
``sequential`` ``lax.scan`` over the clients, one at a time, summing as it goes (O(1) memory)
``chunked``    ``lax.scan`` over chunks of ``chunk`` clients, each chunk vmapped (O(chunk) memory)
=============  ==================================================================================

With step groups (``groups = ((num_clients, num_steps), ...)``, see :mod:`.plan`) the clients are
run group after group, each group's data cut to its step budget before any loop over clients, so
XLA reads it straight from the cohort's blocks. The ``lanes`` runner is :mod:`.lanes`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from fedjax_like.core.engine import program as programs

PyTree = Any


def pad_clients(tree: PyTree, num_clients: int, padded: int) -> PyTree:
  """``[n, ...]`` leaves zero-padded to ``[padded, ...]``."""
  if padded == num_clients:
    return tree
  return jax.tree.map(
      lambda x: jnp.concatenate([x, jnp.zeros((padded - num_clients,) + x.shape[1:], x.dtype)]),
      tree,
  )


def _in_chunks(tree: PyTree, num_clients: int, chunk: int) -> PyTree:
  """``[n, ...]`` -> ``[num_chunks, chunk, ...]``, padding the cohort with zero clients."""
  padded = -(-num_clients // chunk) * chunk
  return jax.tree.map(
      lambda x: x.reshape((-1, chunk) + x.shape[1:]), pad_clients(tree, num_clients, padded)
  )


def masked(valid: jax.Array, tree: PyTree) -> PyTree:
  """Zeros where ``valid`` (``[n]``) is False, along the leading axis; NaN-safe."""

  def one(x):
    keep = valid.reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(keep, x, jnp.zeros_like(x))

  return jax.tree.map(one, tree)


def _map(call, broadcast, mapped, data, n, strategy, chunk):
  one = lambda m, d: call(broadcast, m, d)  # noqa: E731
  if strategy == 'vmap':
    return jax.vmap(one)(mapped, data)
  if strategy == 'sequential':
    return jax.lax.map(lambda md: one(*md), (mapped, data))
  chunked = _in_chunks((mapped, data), n, chunk)
  out = jax.lax.map(lambda c: jax.vmap(one)(*c), chunked)
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:])[:n], out)


def _sum(call, broadcast, mapped, data, valid, strategy, chunk):
  n = valid.shape[0]
  one = lambda m, d: call(broadcast, m, d)  # noqa: E731
  if strategy == 'vmap':
    out = jax.vmap(one)(mapped, data)
    return jax.tree.map(lambda x: jnp.sum(x, axis=0), masked(valid, out))
  first = jax.tree.map(lambda x: x[0], (mapped, data))
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(one, *first))
  if strategy == 'sequential':

    def step(total, inputs):
      m, d, ok = inputs
      out = one(m, d)
      return jax.tree.map(lambda t, o: t + jnp.where(ok, o, jnp.zeros_like(o)), total, out), None

    return jax.lax.scan(step, zeros, (mapped, data, valid))[0]

  chunked = _in_chunks((mapped, data, valid), n, chunk)

  def chunk_step(total, inputs):
    m, d, ok = inputs
    out = masked(ok, jax.vmap(one)(m, d))
    return jax.tree.map(lambda t, o: t + jnp.sum(o, axis=0), total, out), None

  return jax.lax.scan(chunk_step, zeros, chunked)[0]


def run_local(program, broadcast, mapped, data, valid, *, reduce, strategy, chunk, kind,
              groups=None, step=None):
  """One device's share: every client's output, stacked or summed (see the module docstring).

  Args:
    program: the :class:`~.program.Program` (its arguments already split and sharded: see
      ``broadcast``, ``mapped``, ``data``).
    broadcast: the arguments every client shares.
    mapped: the per-client arguments, leaves ``[clients, ...]``.
    data: ``(batches, mask)`` leaves ``[clients, steps, ...]``, or ``()`` for no steps.
    valid: bool ``[clients]``.
    reduce: ``'stack'`` or ``'sum'``.
    strategy: ``'vmap'``, ``'sequential'`` or ``'chunked'``.
    chunk: clients per chunk for ``chunked``.
    kind: the step loop's form (:func:`~.program.loop_steps`).
    groups: step groups over these clients, or None.
    step: the (lowered) step function to use instead of the program's.
  """
  call = programs.client_function(program, kind, step)

  def run(m, d, ok):
    cap = min(chunk, ok.shape[0])
    if reduce == 'sum':
      return _sum(call, broadcast, m, d, ok, strategy, cap)
    return _map(call, broadcast, m, d, ok.shape[0], strategy, cap)

  if groups is None or not jax.tree.leaves(data):
    return run(mapped, data, valid)
  total = sum(c for c, _ in groups)
  if total != valid.shape[0]:
    raise ValueError(
        f'step groups cover {total} clients per device but the cohort has {valid.shape[0]} per '
        'device. Plan the groups for this cohort with plan_step_groups.'
    )
  outs, start = [], 0
  for count, budget in groups:
    part = lambda x: x[start:start + count]  # noqa: E731
    cut = jax.tree.map(lambda x: x[start:start + count, :budget], data)
    outs.append(run(jax.tree.map(part, mapped), cut, valid[start:start + count]))
    start += count
  if reduce == 'sum':
    return jax.tree.map(lambda *xs: functools.reduce(jnp.add, xs), *outs)
  return jax.tree.map(lambda *xs: jnp.concatenate(xs), *outs)
