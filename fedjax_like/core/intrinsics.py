"""Federated communication operators over placed values, executed by the engine.

The operators check placements when they are called (inside ``jax.jit`` or a
:func:`~fedjax_like.core.computation.federated_computation`, once, at trace time) and raise a
``TypeError`` that names the operator and the types involved:

=========================================  =================================================
``federated_value(x, P)``                  ``x@P`` (all equal at CLIENTS)
``federated_broadcast(x@SERVER)``          ``x@CLIENTS`` (all equal; never copied per client)
``federated_map(fn, {x}@CLIENTS, key=k)``  ``{fn(x[, key_i])}@CLIENTS``; ``key_i`` split from ``k``
``federated_map(fn, x@SERVER)``             ``fn(x)@SERVER`` (server-side work)
``federated_zip(<{a}@CLIENTS,{b}@..>)``    ``{<a,b>}@CLIENTS`` (or ``<a,b>@SERVER``)
``federated_sum({x}@CLIENTS)``             ``(sum_i x_i)@SERVER``
``federated_mean({x}@CLIENTS, {w})``       ``(sum_i w_i x_i / sum_i w_i)@SERVER``
``federated_min`` / ``federated_max``      elementwise extremes ``@SERVER``
``federated_aggregate(x, zero, acc,        ``report(merge(...accumulate(zero, x_i)...))@SERVER``
merge, report)``
``federated_secure_sum({x}, bitwidth)``    ``(sum_i x_i mod 2**bitwidth)@SERVER`` (+ overflow)
=========================================  =================================================

Ragged cohorts: a per-client value may carry a client mask (False for padding clients); every
reduction ignores masked clients, and values derived by ``federated_map`` keep the mask.

Client-side work is *deferred*: ``federated_map`` records a
:class:`~fedjax_like.core.engine.Program` instead of running it, maps compose into its ``finish``
and zips combine programs into one, and the reduction that consumes them (``federated_sum``/
``federated_mean``/``federated_secure_sum``) hands that one program to the engine
(``engine.sum``). A :class:`~fedjax_like.core.engine.ClientLoop` mapped over a client's data,
``federated_map(loop, (shared, client_input, data))``, is a program whose steps the engine loops
over itself. So a round of FedAvg is a single map-reduce whose memory the engine controls and whose
execution strategy (vmap, sequential, chunked, lanes) is the engine's choice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from fedjax_like.core import tree
from fedjax_like.core.engine import ClientLoop, Program, combine
from fedjax_like.core.placements import CLIENTS, SERVER, Placement
from fedjax_like.core.secure_sum import federated_secure_sum, federated_secure_sum_bitwidth
from fedjax_like.core.values import (
    FederatedValue,
    combined_mask,
    describe,
    engine_of,
    expect,
    expect_per_client,
    reduce_to_server,
    scope_of,
)

PyTree = Any


def federated_value(value: PyTree, placement: Placement) -> FederatedValue:
  """Places a (non-federated) value: at SERVER, or at CLIENTS as all-equal."""
  return FederatedValue(value, placement, all_equal=True)


def federated_broadcast(value: FederatedValue) -> FederatedValue:
  """``T@SERVER -> T@CLIENTS`` (all equal); free: the engine passes it with ``in_axes=None``."""
  expect('federated_broadcast', value, SERVER)
  # A lazy value is computed here: the clients' work that receives it runs in a later pass.
  return FederatedValue(value.value, CLIENTS, all_equal=True, engine=value.engine,
                        scope=value.scope)


def _combine(values) -> Program:
  """Several CLIENTS values as one program whose output is the tuple of their members."""
  programs = tuple(
      Program.of_function(lambda x: x, (v.value,), (None,)) if v.all_equal else v.as_program()
      for v in values
  )
  engine, scope = engine_of(values), scope_of(values)
  return combine(programs, lambda p: FederatedValue(
      None, CLIENTS, program=p, engine=engine, scope=scope).value)


def _cohort_size(op: str, values) -> int:
  for v in values:
    if v.is_per_client():
      n = v.num_clients
      if n is not None:
        return n
  raise TypeError(
      f'{op} needs a per-client {{T}}@CLIENTS argument to know the cohort size; got '
      + ', '.join(describe(v) for v in values)
      + '.'
  )


def federated_client_keys(key: Any, like: FederatedValue) -> FederatedValue:
  """``key@SERVER -> {key_i}@CLIENTS``: one independent key per client of ``like``'s cohort.

  Client ``i`` gets ``jax.random.split(key, num_clients)[i]``, so a run is reproducible from the
  server's key whatever the execution strategy.

  Args:
    key: a ``jax.random`` key (typed, or raw ``uint32[2]``), raw or placed at SERVER.
    like: a per-client value whose cohort (size and mask) the keys follow.
  """
  if isinstance(key, FederatedValue):
    expect('federated_client_keys (key)', key, SERVER)
    key = key.value
  n = _cohort_size('federated_client_keys', (like,))
  return FederatedValue(jax.random.split(key, n), CLIENTS, mask=like.mask, engine=like.engine,
                        scope=like.scope)


def _map_loop(loop: ClientLoop, arg) -> FederatedValue:
  if not (isinstance(arg, (tuple, list)) and len(arg) == 3):
    raise TypeError(
        'federated_map of a ClientLoop takes (shared, client_input, data): three CLIENTS values, '
        f'the last the clients\' (batches, mask); got {arg!r}.'
    )
  shared, client_input, data = arg
  for what, v in (('shared', shared), ('client_input', client_input), ('data', data)):
    expect(f'federated_map (loop {what})', v, CLIENTS)
  expect_per_client('federated_map (loop data)', data)
  if data.is_deferred:
    raise TypeError('federated_map of a ClientLoop steps over stored client data, not over the '
                    'output of another federated_map.')
  # Deferred per-client inputs (e.g. keys derived per client) are computed first: ``init`` reads
  # them once per client, so the loop carries no second program.
  axes = tuple(None if v.all_equal else 0 for v in (shared, client_input))
  program = Program.of_loop(loop, shared.value, axes[0], client_input.value, axes[1], data.value)
  return FederatedValue(
      None, CLIENTS, mask=combined_mask((shared, client_input, data)), program=program,
      engine=engine_of((data, shared, client_input)), scope=scope_of((data, shared, client_input)),
  )


def federated_map(fn: Callable[..., PyTree] | ClientLoop, arg, key: Any = None) -> FederatedValue:
  """Applies ``fn`` to each client's value: ``({T}@CLIENTS, T -> U) -> {U}@CLIENTS``.

  At SERVER, as in TFF, ``federated_map(fn, x@SERVER) -> fn(x)@SERVER``: server-side work on the
  result of a reduction is written this way (rather than by reading ``.value``), so it stays part
  of the round's single pass.

  ``fn`` may be a :class:`~fedjax_like.core.engine.ClientLoop`: ``federated_map(loop, (shared,
  client_input, data))`` runs ``loop.init(shared_i, client_input_i)``, ``loop.step`` over the
  client's real steps of ``data_i = (batches_i, mask_i)`` (``[steps, batch_size, ...]``), and
  ``loop.finish``; the engine owns that loop.

  Args:
    fn: a pure JAX function of one client's value(s) (and its key when ``key`` is given), or a
      ``ClientLoop``.
    arg: a CLIENTS value, or a tuple/list of them (then ``fn`` is called as ``fn(*members)``).
      All-equal (broadcast) members are passed to every client unchanged.
    key: optional randomness: a key at SERVER (or a raw key), split into one key per client and
      passed as ``fn``'s last argument; or per-client keys ``{key}@CLIENTS`` passed as they are.

  Returns:
    ``{U}@CLIENTS``, deferred: the work runs inside the reduction that consumes it. It keeps the
    client mask of its arguments (their AND when several carry one).
  """
  if isinstance(fn, ClientLoop):
    if key is not None:
      raise TypeError('federated_map of a ClientLoop takes its keys in client_input, not key=.')
    return _map_loop(fn, arg)
  many = isinstance(arg, (tuple, list))
  values = tuple(arg) if many else (arg,)
  if values and all(isinstance(v, FederatedValue) and v.placement is SERVER for v in values):
    if key is not None:
      raise TypeError('federated_map at SERVER takes no key=; pass the key as an argument.')
    return _map_at_server(fn, values)
  for i, v in enumerate(values):
    where = f' (argument {i})' if many else ''
    hint = (
        ' Use federated_broadcast to send a SERVER value to the clients first.'
        if isinstance(v, FederatedValue)
        else ''
    )
    expect(f'federated_map{where}', v, CLIENTS, hint)
  if key is not None:
    if isinstance(key, FederatedValue) and key.placement is CLIENTS:
      keys = expect_per_client('federated_map (key)', key)
    else:
      like = next((v for v in values if v.is_per_client()), None)
      if like is None:
        raise TypeError(
            'federated_map with a SERVER key needs a per-client {T}@CLIENTS argument to split the '
            'key over; got ' + ', '.join(describe(v) for v in values) + '.'
        )
      keys = federated_client_keys(key, like)
    values = values + (keys,)
  engine, scope = engine_of(values), scope_of(values)
  if all(v.all_equal for v in values):
    return FederatedValue(fn(*(v.value for v in values)), CLIENTS, all_equal=True, engine=engine,
                          scope=scope)
  if len(values) == 1 and values[0].is_deferred:  # the same loop, one more step in its finish
    program = values[0].as_program().then(fn)
  else:
    program = _combine(values).then(lambda members: fn(*members))
  return FederatedValue(
      None, CLIENTS, mask=combined_mask(values), program=program, engine=engine, scope=scope
  )


def _map_at_server(fn: Callable[..., PyTree], values: tuple) -> FederatedValue:
  """``(T@SERVER, T -> U) -> U@SERVER``: server-side work on server values (TFF's form); lazy
  when an argument is (the result of a reduction that has not run yet)."""
  engine, scope = engine_of(values), scope_of(values)
  if not any(v.is_lazy for v in values):
    return FederatedValue(fn(*(v.value for v in values)), SERVER, engine=engine, scope=scope)

  def abstract():
    return jax.eval_shape(fn, *(v.type_signature.member for v in values))

  return FederatedValue(None, SERVER, engine=engine, scope=scope,
                        lazy=(lambda: fn(*(v.value for v in values)), abstract))


def federated_zip(values: PyTree) -> FederatedValue:
  """``<{A}@CLIENTS,{B}@CLIENTS> -> {<A,B>}@CLIENTS``, or ``<A@SERVER,B@SERVER> -> <A,B>@SERVER``.

  Args:
    values: a structure (tuple, list, dict, NamedTuple) whose leaves are federated values, all at
      CLIENTS or all at SERVER.
  """
  leaves, treedef = jax.tree.flatten(values, is_leaf=lambda x: isinstance(x, FederatedValue))
  if not leaves or not all(isinstance(v, FederatedValue) for v in leaves):
    raise TypeError(
        'federated_zip expects a structure of federated values; got '
        + ', '.join(describe(v) for v in leaves or [values])
        + '.'
    )
  placements = {v.placement for v in leaves}
  if len(placements) > 1:
    raise TypeError(
        'federated_zip expects values at one placement; got '
        + ', '.join(describe(v) for v in leaves)
        + '.'
    )
  if placements == {SERVER}:
    return _map_at_server(lambda *members: jax.tree.unflatten(treedef, members), tuple(leaves))
  return federated_map(lambda *members: jax.tree.unflatten(treedef, members), tuple(leaves))


def federated_sum(value: FederatedValue) -> FederatedValue:
  """``{T}@CLIENTS -> T@SERVER``: the sum over real clients.

  Lazy inside a computation: every reduction requested before its result is read runs in the same
  engine pass (see :mod:`fedjax_like.core.passes`).
  """
  program = expect_per_client('federated_sum', value).masked_program()
  return reduce_to_server(value, program)


def federated_mean(value: FederatedValue, weight: FederatedValue | None = None) -> FederatedValue:
  """``{T}@CLIENTS -> T@SERVER``: ``sum_i w_i x_i / sum_i w_i`` (unweighted when weight is None).

  Integer members are averaged as float32 (the mean of 1 and 2 is 1.5).

  Args:
    value: the per-client values.
    weight: per-client scalar weights ``{float32}@CLIENTS``; clients of weight 0 (and masked
      padding clients) do not count. The mean of a cohort whose weights are all 0 is 0.
  """
  expect_per_client('federated_mean', value)
  if weight is None:
    weight = federated_map(lambda x: jnp.ones((), jnp.float32), value)
  else:
    expect_per_client('federated_mean (weight)', weight)

  def weigh(x, w):
    w = jnp.asarray(w, jnp.float32)
    # A mean is fractional: integer (and bool) members are averaged as floats.
    x = jax.tree.map(lambda a: a if jnp.issubdtype(a.dtype, jnp.inexact) else a.astype(jnp.float32), x)
    return tree.scale(x, w), w

  summed = federated_sum(federated_map(weigh, (value, weight)))
  return federated_map(lambda s: tree.divide_by_total(*s), summed)


def _extreme_identity(dtype, largest: bool):
  if jnp.issubdtype(dtype, jnp.floating):
    return jnp.inf if largest else -jnp.inf
  if jnp.issubdtype(dtype, jnp.integer):
    info = jnp.iinfo(dtype)
    return info.max if largest else info.min
  return largest  # bool


def _federated_extreme(op: str, reduce, value: FederatedValue, largest_identity: bool):
  expect_per_client(op, value)
  stacked, mask = value.value, value.mask

  def one(x):
    if mask is not None:
      keep = mask.reshape((-1,) + (1,) * (x.ndim - 1))
      x = jnp.where(keep, x, jnp.asarray(_extreme_identity(x.dtype, largest_identity), x.dtype))
    return reduce(x, axis=0)

  return FederatedValue(jax.tree.map(one, stacked), SERVER, engine=value.engine, scope=value.scope)


def federated_min(value: FederatedValue) -> FederatedValue:
  """``{T}@CLIENTS -> T@SERVER``: the elementwise minimum over real clients (+inf if none)."""
  return _federated_extreme('federated_min', jnp.min, value, largest_identity=True)


def federated_max(value: FederatedValue) -> FederatedValue:
  """``{T}@CLIENTS -> T@SERVER``: the elementwise maximum over real clients (-inf if none)."""
  return _federated_extreme('federated_max', jnp.max, value, largest_identity=False)


def federated_aggregate(
    value: FederatedValue,
    zero: PyTree,
    accumulate: Callable[[PyTree, PyTree], PyTree],
    merge: Callable[[PyTree, PyTree], PyTree],
    report: Callable[[PyTree], PyTree],
) -> FederatedValue:
  """``{T}@CLIENTS -> R@SERVER`` by a user-defined aggregation, as ``tff.federated_aggregate``.

  Each client folds its value into a fresh accumulator, ``a_i = accumulate(zero, x_i)`` (masked
  clients keep ``zero``); accumulators are merged pairwise in a balanced tree, ``log2(n)`` levels,
  each level one call of the engine; the server reports ``report(a)``.

  Args:
    value: per-client values ``{T}@CLIENTS``.
    zero: the accumulator's initial value ``A`` (a non-federated pytree); it must be an identity
      of ``merge``.
    accumulate: ``(A, T) -> A``.
    merge: ``(A, A) -> A``, associative.
    report: ``A -> R``.
  """
  expect_per_client('federated_aggregate', value)
  zero = jax.tree.map(jnp.asarray, zero)
  n = _cohort_size('federated_aggregate', (value,))
  mask = value.mask if value.mask is not None else jnp.ones((n,), bool)
  engine = value.run_on
  accumulated = FederatedValue(None, CLIENTS, program=value.as_program().with_arg(
      mask, 0, lambda out, keep: tree.where(keep, accumulate(zero, out), zero)
  ), engine=value.engine, scope=value.scope)
  level = accumulated.value  # joins the scope's pass
  size = n
  while size > 1:
    if size % 2:
      level = jax.tree.map(lambda x, z: jnp.concatenate([x, z[None]]), level, zero)
      size += 1
    pairs = jax.tree.map(lambda x: x.reshape((size // 2, 2) + x.shape[1:]), level)
    pair_merge = lambda p: merge(*(jax.tree.map(lambda x: x[j], p) for j in (0, 1)))  # noqa: E731
    level = engine.map(Program.of_function(pair_merge, (pairs,), (0,)))
    size //= 2
  merged = jax.tree.map(lambda x: x[0], level) if n else zero
  return FederatedValue(report(merged), SERVER, engine=value.engine, scope=value.scope)


def num_real_clients(value: FederatedValue) -> jax.Array:
  """The number of unmasked clients of a per-client value's cohort, as an int32 scalar."""
  expect_per_client('num_real_clients', value)
  if value.mask is None:
    return jnp.asarray(value.num_clients or 0, jnp.int32)
  return jnp.sum(value.mask.astype(jnp.int32))


__all__ = [
    'FederatedValue',
    'federated_aggregate',
    'federated_broadcast',
    'federated_client_keys',
    'federated_map',
    'federated_max',
    'federated_mean',
    'federated_min',
    'federated_secure_sum',
    'federated_secure_sum_bitwidth',
    'federated_sum',
    'federated_value',
    'federated_zip',
    'num_real_clients',
]
