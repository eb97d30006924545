"""FederatedValue: a pytree with a placement, an optional client mask and deferred client work.

A CLIENTS value holds one member per client, stacked on a leading cohort axis ``[num_clients,
...]``, or a single member when ``all_equal`` (a broadcast value, never copied per client). A
cohort may be *ragged*: padding clients fill it to a fixed shape so one compiled program serves
every round. Their rows carry ``mask[i] = False`` and every reduction of :mod:`intrinsics`
ignores them (their outputs are replaced by the reduction's identity with ``where``, so even a NaN
computed on padding never leaks).

Client work is *deferred*: a value produced by ``federated_map`` records a
:class:`~fedjax_like.core.engine.Program` (the per-client function or client loop and its
arguments). Reductions are *lazy*: ``federated_sum`` records a request in the computation's
:class:`~fedjax_like.core.passes.PassScope` and returns a SERVER value computed when first read,
so every reduction requested before that read runs in the same engine pass (see
:mod:`fedjax_like.core.passes`); reading a deferred CLIENTS value is a request to stack it
``[clients, ...]``, which joins that pass too. Every value carries the
:class:`~fedjax_like.core.engine.Engine` it runs on and its scope (set by the computation that
made it; derived values inherit both), so nothing reads ambient state while a computation is
traced.

This module holds the value type and the placement checks every operator shares; the operators
themselves are in :mod:`fedjax_like.core.intrinsics`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from fedjax_like.core.engine import Engine, Program, data_clients, default_runtime, output_type
from fedjax_like.core.passes import PassScope, Request, run_now
from fedjax_like.core.placements import CLIENTS, SERVER, FederatedType, Placement, type_of

PyTree = Any


class FederatedValue:
  """A pytree placed at SERVER or CLIENTS.

  Args:
    value: the pytree. Per-client values have leaves ``[num_clients, ...]``.
    placement: ``SERVER`` or ``CLIENTS``.
    all_equal: for CLIENTS values, True when every client holds the same value (stored once, with
      no cohort axis). Always True at SERVER.
    mask: for per-client values, bool ``[num_clients]``: False marks a padding client that every
      reduction ignores. None means every client is real.
    program: the deferred client work computing a per-client value (then ``value`` is None).
    engine: the engine client work runs on (None: the runtime in force, see ``run_on``).
    scope: the :class:`~fedjax_like.core.passes.PassScope` its reductions join (None: they run
      at once).
    lazy: for a SERVER value not computed yet, ``(compute, abstract)``: ``compute()`` gives the
      pytree (running the scope's pending reductions if needed), ``abstract()`` its
      ``jax.ShapeDtypeStruct``s without running anything.
  """

  def __init__(
      self,
      value: PyTree,
      placement: Placement,
      all_equal: bool = False,
      *,
      mask: jax.Array | None = None,
      program: Program | None = None,
      engine: Engine | None = None,
      scope: PassScope | None = None,
      lazy: tuple[Callable[[], PyTree], Callable[[], PyTree]] | None = None,
  ):
    if not isinstance(placement, Placement):
      raise TypeError(f'placement must be SERVER or CLIENTS; got {placement!r}.')
    self.placement = placement
    self.all_equal = bool(all_equal) or placement is SERVER
    if mask is not None:
      if self.all_equal:
        raise TypeError(
            f'Only per-client {{T}}@CLIENTS values carry a client mask; got {placement}.'
        )
      if jnp.ndim(mask) != 1:
        raise ValueError(f'A client mask is bool [num_clients]; got shape {jnp.shape(mask)}.')
      mask = jnp.asarray(mask, bool)
    if lazy is not None and placement is not SERVER:
      raise TypeError('Only SERVER values are lazy; deferred CLIENTS values carry a program.')
    self.mask = mask
    self._value = value
    self._program = program
    self._request: Request | None = None
    self._lazy = lazy
    self.engine = engine
    self.scope = scope

  @property
  def value(self) -> PyTree:
    """The underlying pytree. Reading it runs what it is waiting for: the pending reductions of
    its scope for a lazy SERVER value; for a deferred CLIENTS value, its clients' work, stacked
    ``[clients, ...]`` (in one pass with the scope's other pending reductions)."""
    if self._lazy is not None:
      self._value = self._lazy[0]()
      self._lazy = None
    elif self._program is not None:
      self.prefetch()
      self._value = self.scope.result(self._request) if self.scope else self._request.result
      self._program = self._request = None
    return self._value

  def prefetch(self, label: str | None = None) -> FederatedValue:
    """Asks for this deferred CLIENTS value stacked ``[clients, ...]`` in the next pass, without
    running anything yet (a no-op for other values). ``label`` names who needs every client's
    value, for the memory check's message. Returns ``self``."""
    if self._program is not None and self._request is None:
      if self.scope is None:
        self._request = Request(self._program, 'stack', self.run_on, label)
        self._request.result = run_now(self._program, 'stack', self.run_on)
      else:
        self._request = self.scope.request(self._program, 'stack', self.run_on, label)
    return self

  @property
  def is_lazy(self) -> bool:
    """True for a SERVER value whose reductions have not run yet."""
    return self._lazy is not None

  @property
  def run_on(self) -> Engine:
    """The engine this value's client work runs on: its own, else the runtime in force."""
    return self.engine or default_runtime().engine

  @property
  def is_deferred(self) -> bool:
    return self._program is not None

  @property
  def num_clients(self) -> int | None:
    """The cohort size (padding included) of a per-client value; None for all-equal ones."""
    if self.all_equal:
      return None
    stored_size = getattr(self._value, 'num_clients', None)  # a CohortData knows its cohort
    if self._program is None and stored_size is not None:
      return int(stored_size)
    p = self.as_program()
    for arg, axis in zip(p.args, p.in_axes):
      if axis == 0:
        for leaf in jax.tree.leaves(arg):
          return int(jnp.shape(leaf)[0])
    if p.data is not None:
      return data_clients(p.data)
    return None if self.mask is None else int(self.mask.shape[0])

  @property
  def type_signature(self) -> FederatedType:
    if self._program is not None:
      return FederatedType(output_type(self._program), CLIENTS, False)
    if self._lazy is not None:
      return FederatedType(self._lazy[1](), SERVER, True)
    return type_of(self._value, self.placement, self.all_equal)

  def __repr__(self) -> str:
    masked = ', masked' if self.mask is not None else ''
    return f'FederatedValue({self.type_signature}{masked})'

  def __getitem__(self, key) -> FederatedValue:
    """Selects a field of a structured value, keeping its placement (and deferral and mask)."""
    if self.is_per_client() or self.is_lazy:
      from fedjax_like.core.intrinsics import federated_map  # noqa: PLC0415 (cycle)

      return federated_map(lambda x: x[key], self)
    return FederatedValue(self.value[key], self.placement, self.all_equal, engine=self.engine,
                          scope=self.scope)

  def is_per_client(self) -> bool:
    return self.placement is CLIENTS and not self.all_equal

  def as_program(self) -> Program:
    """This per-client value as a program (the identity over stored values)."""
    if self._program is not None:
      return self._program
    return Program.of_function(lambda x: x, (self._value,), (0,))

  def masked_program(
      self, identity: Callable[[jax.Array], jax.Array] = jnp.zeros_like
  ) -> Program:
    """The per-client program with padding clients' outputs replaced by ``identity(x)``."""
    p = self.as_program()
    if self.mask is None:
      return p

    def mask_out(out, keep):
      return jax.tree.map(lambda x: jnp.where(keep, x, identity(x)), out)

    return p.with_arg(self.mask, 0, mask_out)


def describe(x: Any) -> str:
  """The printed type of a federated value, or what a non-federated argument is."""
  if isinstance(x, FederatedValue):
    return str(x.type_signature)
  return f'a non-federated {type(x).__name__}'


def expect(op: str, x: Any, placement: Placement, hint: str = '') -> FederatedValue:
  """``x`` if it is placed at ``placement``, else a TypeError naming ``op`` and both types."""
  if not isinstance(x, FederatedValue) or x.placement is not placement:
    expected = '{T}@CLIENTS' if placement is CLIENTS else 'T@SERVER'
    raise TypeError(f'{op} expects a value of type {expected}; got {describe(x)}.{hint}')
  return x


def expect_per_client(op: str, value: Any) -> FederatedValue:
  """``value`` if it is a per-client ``{T}@CLIENTS`` value (not all-equal), else a TypeError."""
  expect(op, value, CLIENTS)
  if value.all_equal:
    raise TypeError(
        f'{op} expects per-client values {{T}}@CLIENTS; got the all-equal {value.type_signature} '
        '(a broadcast value). Reduce per-client values, e.g. the output of federated_map.'
    )
  return value


def combined_mask(values) -> jax.Array | None:
  """The client mask of several per-client values of one cohort: the AND of those they carry."""
  masks = []
  for v in values:
    if v.is_per_client() and v.mask is not None and not any(v.mask is m for m in masks):
      masks.append(v.mask)
  if not masks:
    return None
  out = masks[0]
  for m in masks[1:]:
    if m.shape != out.shape:
      raise ValueError(f'Client masks of one cohort differ in size: {out.shape} vs {m.shape}.')
    out = out & m
  return out


def engine_of(values) -> Engine | None:
  """The engine of the first of ``values`` that carries one (derived values inherit it)."""
  return next((v.engine for v in values if isinstance(v, FederatedValue) and v.engine), None)


def scope_of(values) -> PassScope | None:
  """The scope of the first of ``values`` that carries one (derived values inherit it)."""
  return next((v.scope for v in values if isinstance(v, FederatedValue) and v.scope), None)


def reduce_to_server(value: FederatedValue, program: Program,
                     finish: Callable[[PyTree], PyTree] = lambda summed: summed) -> FederatedValue:
  """``finish(sum over the real clients of program's outputs)@SERVER``, lazily.

  The sum joins the pending reductions of ``value``'s scope (one engine pass for all of them,
  run when a value waiting for them is first read); without a scope it runs at once.

  Args:
    value: the per-client value the program computes from (its engine and scope are used).
    program: the per-client program; padding clients must already be masked out of it.
    finish: server-side work on the sum.
  """
  engine, scope = value.run_on, value.scope
  if scope is None:
    return FederatedValue(finish(run_now(program, 'sum', engine)), SERVER, engine=value.engine)
  request = scope.request(program, 'sum', engine)

  def abstract():
    return jax.eval_shape(finish, output_type(program))

  return FederatedValue(
      None, SERVER, engine=value.engine, scope=scope,
      lazy=(lambda: finish(scope.result(request)), abstract),
  )


def resolve(tree: PyTree) -> PyTree:
  """``tree`` with every federated value replaced by its pytree (running what they wait for)."""
  is_value = lambda x: isinstance(x, FederatedValue)  # noqa: E731
  return jax.tree.map(lambda x: x.value if is_value(x) else x, tree, is_leaf=is_value)


def unpack(value: FederatedValue, count: int) -> tuple:
  """The ``count`` members of a SERVER value holding a tuple: lazy SERVER values while the
  reductions it waits for have not run (inside a computation), else the plain pytrees."""
  if value.is_lazy:
    return tuple(value[i] for i in range(count))
  return tuple(value.value)
