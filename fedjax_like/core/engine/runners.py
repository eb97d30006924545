"""The runners: how a :class:`~.program.Program` runs over one device's clients.

A program's output per client is a pair ``(to_sum, to_stack)``. ``run_local(program, ...)``
computes every client's output in ONE pass and returns ``(summed, stacked)``: ``to_sum`` summed
over the real clients, ``to_stack`` stacked ``[clients, ...]``. Map and sum are this one function
(``engine.map`` stacks everything, ``engine.sum`` sums everything, a fused round does both: metric
sums and, say, new client states). ``valid`` (bool ``[clients]``) marks the clients that count:
padding clients added to fill a chunk or a device are zeroed with ``where`` before any sum, so a
NaN computed on padding never leaks.

=============  ==================================================================================
``vmap``       ``jax.vmap`` of the client function over the whole group
``sequential`` ``lax.scan`` over the clients, one at a time, summing as it goes (O(1) memory);
               each client reads its steps in place (a :class:`~.program.ClientSlice`)
``chunked``    ``lax.scan`` over chunks of ``chunk`` clients, each chunk vmapped (O(chunk) memory)
=============  ==================================================================================

With step groups (``groups = ((num_clients, num_steps), ...)``, see :mod:`.plan`) the clients are
run group after group, each group's data cut to its step budget before any loop over clients, so
XLA reads it straight from the cohort's blocks. The ``lanes`` runner is :mod:`.lanes`. Sums over
clients are :func:`fedjax_like.core.tree.sum_leading` (pairwise adds on CPU).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from fedjax_like.core import tree
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


def _split(out, valid):
  """A client's ``(to_sum, to_stack)`` output with ``to_sum`` zeroed where ``valid`` is False."""
  to_sum, to_stack = out
  return masked(valid, to_sum), to_stack


def _vmapped(one, mapped, data, valid):
  """``(sum, stacked)`` of ``one`` over the clients side by side."""
  to_sum, to_stack = _split(jax.vmap(one)(mapped, data), valid)
  return jax.tree.map(tree.sum_leading, to_sum), to_stack


def _run(call, broadcast, mapped, data, valid, strategy, chunk):
  """``(sum over valid clients of to_sum, to_stack stacked [clients, ...])`` of the clients'
  ``(to_sum, to_stack)`` outputs, in one pass over the clients."""
  n = valid.shape[0]
  one = lambda m, d: call(broadcast, m, d)  # noqa: E731
  if strategy == 'vmap':
    return _vmapped(one, mapped, data, valid)
  first = jax.tree.map(lambda x: x[0], (mapped, data))
  sum_type = jax.eval_shape(one, *first)[0]
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sum_type)
  add = lambda total, part: jax.tree.map(jnp.add, total, part)  # noqa: E731
  if strategy == 'sequential':
    # Each client reads its steps in place from the cohort's arrays (a ClientSlice), not from a
    # slice the scan would copy out for it.
    in_place = bool(jax.tree.leaves(data))

    def client(total, inputs):
      m, d, ok = inputs
      if in_place:
        d = programs.ClientSlice(data[0], data[1], d)
      to_sum, to_stack = one(m, d)
      return add(total, tree_where(ok, to_sum)), to_stack

    index = jnp.arange(n, dtype=jnp.int32) if in_place else data
    return jax.lax.scan(client, zeros, (mapped, index, valid))

  def chunk_step(total, inputs):
    to_sum, to_stack = _vmapped(one, *inputs)
    return add(total, to_sum), to_stack

  total, stacked = jax.lax.scan(chunk_step, zeros, _in_chunks((mapped, data, valid), n, chunk))
  return total, jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:])[:n], stacked)


def tree_where(keep: jax.Array, tree: PyTree) -> PyTree:
  """``tree`` where ``keep`` (a scalar) is True, zeros elsewhere; NaN-safe."""
  return jax.tree.map(lambda x: jnp.where(keep, x, jnp.zeros_like(x)), tree)


def run_local(program, broadcast, mapped, data, valid, *, strategy, chunk, kind, groups=None,
              step=None):
  """One device's share in one pass: ``(summed, stacked)``.

  The program's output per client is ``(to_sum, to_stack)``: ``summed`` is the sum of ``to_sum``
  over the ``valid`` clients, ``stacked`` every client's ``to_stack`` ``[clients, ...]``.

  Args:
    program: the :class:`~.program.Program` (its arguments already split and sharded: see
      ``broadcast``, ``mapped``, ``data``).
    broadcast: the arguments every client shares.
    mapped: the per-client arguments, leaves ``[clients, ...]``.
    data: ``(batches, mask)`` leaves ``[clients, steps, ...]``, or ``()`` for no steps.
    valid: bool ``[clients]``.
    strategy: ``'vmap'``, ``'sequential'`` or ``'chunked'``.
    chunk: clients per chunk for ``chunked``.
    kind: the step loop's form (:func:`~.program.loop_steps`).
    groups: step groups over these clients, or None.
    step: the (lowered) step function to use instead of the program's.
  """
  call = programs.client_function(program, kind, step)

  def run(m, d, ok):
    return _run(call, broadcast, m, d, ok, strategy, min(chunk, ok.shape[0]))

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
  summed = jax.tree.map(lambda *xs: functools.reduce(jnp.add, xs), *(o[0] for o in outs))
  stacked = jax.tree.map(lambda *xs: jnp.concatenate(xs), *(o[1] for o in outs))
  return summed, stacked
