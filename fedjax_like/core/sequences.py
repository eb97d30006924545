"""``sequence_reduce``: a fold over one client's sequence of batches, as TFF's sequence operator.

Over a federated sequence (``{T*}@CLIENTS``, leaves ``[num_clients, steps, ...]``) the fold is a
:class:`~fedjax_like.core.engine.ClientLoop` (``init`` the zero, ``step`` the operator), so the
engine owns the loop and runs only the steps with a real element; inside a client function (a
plain ``[steps, ...]`` pytree) it is a ``scan`` that skips the steps the mask marks empty.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from fedjax_like.core import tree
from fedjax_like.core.engine import ClientLoop
from fedjax_like.core.intrinsics import federated_map
from fedjax_like.core.placements import CLIENTS
from fedjax_like.core.values import FederatedValue, combined_mask, describe, expect_per_client

PyTree = Any


def _fold(sequence: PyTree, zero: PyTree, op: Callable, mask: jax.Array | None) -> PyTree:
  """One client's fold (inside a client function): a ``scan`` skipping maskless steps."""
  zero = jax.tree.map(jnp.asarray, zero)
  if mask is None:
    return jax.lax.scan(lambda acc, x: (op(acc, x), None), zero, sequence)[0]
  mask = jnp.asarray(mask)
  valid = mask.reshape(mask.shape[0], -1).any(axis=1)

  def step(acc, inputs):
    element, keep = inputs
    return tree.where(keep, op(acc, element), acc), None

  return jax.lax.scan(step, zero, (sequence, valid))[0]


def _fold_loop(zero: PyTree, op: Callable) -> ClientLoop:
  """``sequence_reduce`` as a client loop: the engine steps over the real steps only."""
  zero = jax.tree.map(jnp.asarray, zero)
  return ClientLoop(lambda shared, client_input: zero, lambda acc, x, m: op(acc, x),
                    lambda shared, acc: acc)


def sequence_reduce(
    sequence: Any,
    zero: PyTree,
    op: Callable[[PyTree, PyTree], PyTree],
    mask: Any = None,
) -> Any:
  """A fold over a client's sequence of batches: ``acc = op(acc, batch)`` for each step.

  Over a federated sequence it is a :class:`~fedjax_like.core.engine.ClientLoop`, so the engine
  owns the loop (and runs only the steps with a real element); inside a client function it is a
  plain ``scan``.

  Args:
    sequence: one client's pytree of ``[steps, ...]`` arrays (inside a ``federated_map``), or a
      per-client ``{T*}@CLIENTS`` value of ``[num_clients, steps, ...]`` leaves.
    zero: the initial accumulator (a non-federated pytree).
    op: ``(accumulator, element) -> accumulator``; ``element`` is one step's slice. To weigh
      examples inside a batch, put the example mask in the sequence: ``((x, y), mask)``.
    mask: ``[steps]`` or ``[steps, ...]`` (``{...}@CLIENTS`` for a federated sequence): a step
      with no True entry leaves the accumulator unchanged (padding steps are inert).

  Returns:
    The final accumulator, or ``{A}@CLIENTS`` for a federated sequence.
  """
  if isinstance(sequence, FederatedValue):
    expect_per_client('sequence_reduce', sequence)
    seq = sequence.value
    if mask is None:
      steps = jax.tree.leaves(seq)[0].shape[:2]
      steps_mask = jnp.ones(steps, bool)
    else:
      expect_per_client('sequence_reduce (mask)', mask)
      steps_mask = jnp.asarray(mask.value).reshape(mask.value.shape[:2] + (-1,))
    unit = FederatedValue((), CLIENTS, all_equal=True)
    data = FederatedValue((seq, steps_mask), CLIENTS, mask=combined_mask(
        (sequence,) if mask is None else (sequence, mask)), engine=sequence.engine,
        scope=sequence.scope)
    return federated_map(_fold_loop(zero, op), (unit, unit, data))
  if isinstance(mask, FederatedValue):
    raise TypeError(f'sequence_reduce of a non-federated sequence got a mask {describe(mask)}.')
  return _fold(sequence, zero, op, mask)
