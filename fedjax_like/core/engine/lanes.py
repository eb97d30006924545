"""The ``lanes`` runner: several clients back to back in each vectorized lane.

Under ``vmap`` a ragged cohort runs every client for its group's longest step count. Lanes instead
bin-pack clients by step count (:func:`~.plan.plan_lanes`): ``lanes`` lanes side by side, each a
sequence of clients run one after the other, ``length`` lane steps long. One compiled loop runs
all lanes together; at lane step ``t`` lane ``l`` works on client ``c`` at its step ``s``:

    s == 0            carry = init(args_c)                         (a client starts)
    s < steps_c       carry = step(carry, batch_c[s], mask_c[s])   (its s-th real step)
    s == last_c       output_c = finish(args_c, carry)             (it ends: summed, or stored)

so the only padding computed is the slack at the lanes' ends (under 10% on EMNIST-like cohorts of
10 to 10,000 clients). ``init`` and ``finish`` are evaluated every lane step and selected where
they apply, which costs a few elementwise passes over the carry next to each step's gradient.

Placement of clients in lanes comes from the host as per-client int32 arrays (``lane``, ``start``,
``rank``: lane, first lane step, index among the lane's clients), carried in
:class:`CohortData.lanes`; the lane table ``[lanes, length]`` is rebuilt from them on the device
with one sort and one ``searchsorted``, so a new cohort of the same lane shape reuses the
compiled program.
"""

from __future__ import annotations

import collections.abc
from typing import Any

import jax
import jax.numpy as jnp

from fedjax_like.core import tree

PyTree = Any


@jax.tree_util.register_pytree_node_class
class CohortData(collections.abc.Sequence):
  """A packed cohort as the engine steps over it; its plan travels with it.

  Attributes:
    batches: pytree of ``[clients, steps, batch_size, ...]``.
    mask: bool ``[clients, steps, batch_size]``.
    lanes: ``(lane, start, rank)``, int32 ``[clients]`` each (see the module docstring), when the
      cohort was planned in lanes; else None.
    step_groups: per device, ``((num_clients, num_steps), ...)`` when the cohort was planned in
      step groups (static: part of the compile key); else None.
    lane_shape: ``(lanes, length, slots)`` per device with ``lanes`` (static); else None.
    stream: a streamed cohort's :class:`~.stream.StreamSpec` (static), else None. Its data stays
      on the host (``batches`` and ``mask`` are None): the engine fetches it chunk by chunk
      (:mod:`.stream`), with ``token`` (int32) naming the round's host feeder and ``real`` (bool
      ``[clients]``) marking the clients that have examples.

  A sequence of two, ``(batches, mask)``: indexing, unpacking and printed types show those.
  """

  def __init__(self, batches, mask, lanes=None, step_groups=None, lane_shape=None, stream=None,
               token=None, real=None):
    self.batches, self.mask, self.lanes = batches, mask, lanes
    self.step_groups = None if step_groups is None else tuple(map(tuple, step_groups))
    self.lane_shape = None if lane_shape is None else tuple(lane_shape)
    self.stream, self.token, self.real = stream, token, real

  @classmethod
  def streamed(cls, token, real, spec) -> CohortData:
    """A streamed cohort (see the class docstring)."""
    return cls(None, None, stream=spec, token=token, real=real)

  def tree_flatten(self):
    return ((self.batches, self.mask, self.lanes, self.token, self.real),
            (self.step_groups, self.lane_shape, self.stream))

  @classmethod
  def tree_unflatten(cls, aux, children):
    batches, mask, lanes, token, real = children
    step_groups, lane_shape, stream = aux
    return cls(batches, mask, lanes, step_groups, lane_shape, stream, token, real)

  @property
  def num_clients(self) -> int:
    return self.stream.num_clients if self.stream is not None else self.mask.shape[0]

  @property
  def client_mask(self) -> jax.Array:
    """bool ``[clients]``: the clients with at least one real example."""
    if self.stream is not None:
      return self.real
    return jnp.any(self.mask, axis=tuple(range(1, self.mask.ndim)))

  def client_type(self) -> PyTree:
    """One client's ``(batches, mask)`` as ``jax.ShapeDtypeStruct``s (``[steps, batch, ...]``)."""
    if self.stream is not None:
      longest = self.stream.longest
      return jax.tree.map(lambda s: jax.ShapeDtypeStruct((longest,) + tuple(s.shape), s.dtype),
                          self.stream.step_type)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype),
                        (self.batches, self.mask))

  def __getitem__(self, i):
    return (self.batches, self.mask)[i]

  def __iter__(self):
    return iter((self.batches, self.mask))

  def __len__(self):
    return 2


def _lane_table(lane, start, occupancy, num_lanes: int, length: int):
  """Per lane step: the client, its step, and whether it starts / steps / ends, ``[lanes, length]``."""
  key = lane * (length + 1) + start
  by_key = jnp.argsort(key)
  sorted_key = key[by_key]
  lanes_ = jnp.arange(num_lanes, dtype=jnp.int32)[:, None]
  steps_ = jnp.arange(length, dtype=jnp.int32)[None, :]
  j = jnp.searchsorted(sorted_key, lanes_ * (length + 1) + steps_, side='right') - 1
  client = by_key[jnp.clip(j, 0)]
  s = steps_ - start[client]
  on = (j >= 0) & (lane[client] == lanes_) & (s < occupancy[client])
  return client, s, on, on & (s == 0), on & (s == occupancy[client] - 1)


def run_lanes(program, broadcast, mapped, data: CohortData, valid, *, shape, step=None):
  """One device's share run in lanes, in one pass: ``(summed, stacked)``.

  The program's output per client is ``(to_sum, to_stack)`` (see :mod:`.runners`): ``summed`` is
  the sum of ``to_sum`` over the ``valid`` clients, ``stacked`` every client's ``to_stack``
  ``[clients, ...]``.

  Args:
    program: the :class:`~.program.Program`.
    broadcast: the arguments every client shares.
    mapped: per-client arguments ``[clients, ...]``.
    data: the device's :class:`CohortData` (with ``lanes``).
    valid: bool ``[clients]``: the clients that count in a sum.
    shape: ``(lanes, length, slots)`` (:class:`~.plan.LanePlan`).
    step: the (lowered) step function to use instead of the program's.
  """
  num_lanes, length, slots = shape
  step = step or program.step
  lane, start, rank = data.lanes
  active = jnp.any(data.mask, axis=-1)  # [clients, steps]
  steps = jnp.sum(active, axis=1, dtype=jnp.int32)
  occupancy = jnp.maximum(steps, 1)
  order = jnp.argsort(~active, axis=1, stable=True).astype(jnp.int32)  # real steps first
  table = _lane_table(lane, start, occupancy, num_lanes, length)

  axes = program.in_axes

  def args_of(c):
    b, m = iter(broadcast), iter(jax.tree.map(lambda x: x[c], mapped))
    return tuple(next(m) if ax == 0 else next(b) for ax in axes)

  at0 = args_of(0)
  carry_shape = jax.eval_shape(lambda a: program.init(*a[: program.init_arity]), at0)
  sum_shape, stack_shape = jax.eval_shape(lambda a, c: program.finish(*a, c), at0, carry_shape)
  zeros = lambda shapes, lead=(): jax.tree.map(  # noqa: E731
      lambda s: jnp.zeros(lead + s.shape, s.dtype), shapes
  )

  def one_lane(clients, s_row, on_row, first_row, last_row):
    def body(state, x):
      carry, (total, stored) = state
      c, s, on, first, last = x
      args = args_of(c)
      carry = tree.where(first, program.init(*args[: program.init_arity]), carry)
      if step is not None:
        index = order[c, jnp.clip(s, 0, order.shape[1] - 1)]
        batch = jax.tree.map(lambda b: b[c, index], data.batches)
        stepped = step(carry, batch, data.mask[c, index])
        carry = tree.where(on & (s < steps[c]), stepped, carry)
      to_sum, to_stack = program.finish(*args, carry)
      keep = last & valid[c]
      total = jax.tree.map(lambda a, o: a + jnp.where(keep, o, jnp.zeros_like(o)), total, to_sum)
      r = rank[c]
      stored = jax.tree.map(lambda a, o: a.at[r].set(jnp.where(last, o, a[r])), stored, to_stack)
      return (carry, (total, stored)), None

    acc0 = (zeros(sum_shape), zeros(stack_shape, (slots,)))
    (_, acc), _ = jax.lax.scan(
        body, (zeros(carry_shape), acc0), (clients, s_row, on_row, first_row, last_row)
    )
    return acc

  total, stored = jax.vmap(one_lane)(*table)
  return (jax.tree.map(tree.sum_leading, total),
          jax.tree.map(lambda x: x[lane, rank], stored))
