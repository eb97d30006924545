"""Federated communication operators over placed values, executed by the cohort engine.

A :class:`FederatedValue` is a pytree with a placement. The operators check placements when they are
called (so inside ``jax.jit`` the check happens once, at trace time) and raise a ``TypeError`` that
names the operator and the types involved:

- ``federated_value(x, placement)``      x@P
- ``federated_broadcast(x@SERVER)``      -> x@CLIENTS (all equal; never copied per client)
- ``federated_map(fn, {x}@CLIENTS)``     -> {fn(x)}@CLIENTS
- ``federated_zip((a@CLIENTS, b@CLIENTS))`` -> {<a,b>}@CLIENTS
- ``federated_sum({x}@CLIENTS)``         -> (sum x)@SERVER
- ``federated_mean({x}@CLIENTS, weight)`` -> (sum w x / sum w)@SERVER
- ``federated_min`` / ``federated_max``  -> elementwise extremes @SERVER

Client-side work is *deferred*: ``federated_map`` records the function instead of running it, maps
compose, and the reduction that consumes them (``federated_sum``/``federated_mean``) hands one fused
per-client function to :func:`fedjax_like.core.cohort.sum_clients`. So a round of FedAvg is a single
map-reduce whose memory the engine controls (O(chunk), never O(cohort x model)) and whose execution
strategy (vmap, sequential, chunked) is the engine's choice. A deferred value that is used in any
other way is materialized with :func:`fedjax_like.core.cohort.map_clients`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from fedjax_like.core import cohort, tree
from fedjax_like.core.placements import CLIENTS, SERVER, FederatedType, Placement, type_of

PyTree = Any


class _Deferred:
  """A per-client function not yet run: ``fn(*[arg per client])`` for args with ``in_axes``."""

  def __init__(self, fn: Callable[..., PyTree], args: tuple[PyTree, ...], in_axes: tuple):
    self.fn, self.args, self.in_axes = fn, args, in_axes


class FederatedValue:
  """A pytree placed at SERVER or CLIENTS.

  Attributes:
    placement: ``SERVER`` or ``CLIENTS``.
    all_equal: for CLIENTS values, True when every client holds the same value (stored once, with
      no cohort axis); otherwise leaves carry a leading cohort axis ``[num_clients, ...]``.
  """

  def __init__(self, value: PyTree, placement: Placement, all_equal: bool = False, *, _deferred=None):
    if not isinstance(placement, Placement):
      raise TypeError(f'placement must be SERVER or CLIENTS; got {placement!r}.')
    self.placement = placement
    self.all_equal = bool(all_equal) or placement is SERVER
    self._value = value
    self._deferred = _deferred

  @property
  def value(self) -> PyTree:
    """The underlying pytree (runs deferred client work if there is any)."""
    if self._deferred is not None:
      d = self._deferred
      self._value = cohort.map_clients(d.fn, d.args, d.in_axes)
      self._deferred = None
    return self._value

  @property
  def type_signature(self) -> FederatedType:
    if self._deferred is not None:
      d = self._deferred
      per_client = [
          jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), a) if ax == 0 else a
          for a, ax in zip(d.args, d.in_axes)
      ]
      member = jax.eval_shape(d.fn, *per_client)
      return FederatedType(member, CLIENTS, False)
    return type_of(self._value, self.placement, self.all_equal)

  def __repr__(self) -> str:
    return f'FederatedValue({self.type_signature})'

  def __getitem__(self, key) -> FederatedValue:
    """Selects a field of a structured value, keeping its placement (and deferral)."""
    if self._is_per_client():
      return federated_map(lambda x: x[key], self)
    return FederatedValue(self.value[key], self.placement, self.all_equal)

  def _is_per_client(self) -> bool:
    return self.placement is CLIENTS and not self.all_equal

  def _as_deferred(self) -> _Deferred:
    """This CLIENTS value as a per-client computation (the identity over stored values)."""
    if self._deferred is not None:
      return self._deferred
    return _Deferred(lambda x: x, (self._value,), (0,))


def _describe(x) -> str:
  return str(x.type_signature) if isinstance(x, FederatedValue) else f'a non-federated {type(x).__name__}'


def _expect(op: str, x, placement: Placement, hint: str = '') -> FederatedValue:
  if not isinstance(x, FederatedValue) or x.placement is not placement:
    expected = '{T}@CLIENTS' if placement is CLIENTS else 'T@SERVER'
    raise TypeError(f'{op} expects a value of type {expected}; got {_describe(x)}.{hint}')
  return x


def federated_value(value: PyTree, placement: Placement) -> FederatedValue:
  """Places a (non-federated) value: at SERVER, or at CLIENTS as all-equal."""
  return FederatedValue(value, placement, all_equal=True)


def federated_broadcast(value: FederatedValue) -> FederatedValue:
  """``T@SERVER -> T@CLIENTS`` (all equal). Costs nothing: the engine passes it with in_axes=None."""
  _expect('federated_broadcast', value, SERVER)
  return FederatedValue(value.value, CLIENTS, all_equal=True)


def _combine(values: Sequence[FederatedValue]) -> tuple[Callable, tuple, tuple, list[Callable]]:
  """Fuses several CLIENTS values into one deferred argument list.

  Returns ``(call, args, in_axes, pickers)``: ``call(*args)`` for one client gives the tuple of the
  values' per-client members.
  """
  fns, args, in_axes, spans = [], [], [], []
  for v in values:
    if v.all_equal:
      fns.append(None)
      spans.append((len(args), len(args) + 1))
      args.append(v.value)
      in_axes.append(None)
    else:
      d = v._as_deferred()
      fns.append(d.fn)
      spans.append((len(args), len(args) + len(d.args)))
      args.extend(d.args)
      in_axes.extend(d.in_axes)

  def call(*flat):
    out = []
    for fn, (lo, hi) in zip(fns, spans):
      out.append(flat[lo] if fn is None else fn(*flat[lo:hi]))
    return tuple(out)

  return call, tuple(args), tuple(in_axes), spans


def federated_map(fn: Callable[..., PyTree], arg) -> FederatedValue:
  """Applies ``fn`` to each client's value: ``({T}@CLIENTS, T -> U) -> {U}@CLIENTS``.

  Args:
    fn: a pure JAX function of one client's value(s).
    arg: a CLIENTS value, or a tuple/list of them (then ``fn`` is called as ``fn(*members)``).
      All-equal (broadcast) members are passed to every client unchanged.
  """
  many = isinstance(arg, (tuple, list))
  values = tuple(arg) if many else (arg,)
  for i, v in enumerate(values):
    where = f' (argument {i})' if many else ''
    _expect(
        f'federated_map{where}',
        v,
        CLIENTS,
        ' Use federated_broadcast to send a SERVER value to the clients first.'
        if isinstance(v, FederatedValue)
        else '',
    )
  if all(v.all_equal for v in values):
    return FederatedValue(fn(*(v.value for v in values)), CLIENTS, all_equal=True)
  call, args, in_axes, _ = _combine(values)
  return FederatedValue(None, CLIENTS, _deferred=_Deferred(lambda *a: fn(*call(*a)), args, in_axes))


def federated_zip(values: Sequence[FederatedValue]) -> FederatedValue:
  """``(<{A}@CLIENTS, {B}@CLIENTS>) -> {<A,B>}@CLIENTS``."""
  return federated_map(lambda *members: tuple(members), tuple(values))


def _per_client(op: str, value) -> FederatedValue:
  _expect(op, value, CLIENTS)
  if value.all_equal:
    raise TypeError(
        f'{op} expects per-client values {{T}}@CLIENTS; got the all-equal {value.type_signature} '
        '(a broadcast value). Reduce per-client values, e.g. the output of federated_map.'
    )
  return value


def federated_sum(value: FederatedValue) -> FederatedValue:
  """``{T}@CLIENTS -> T@SERVER``: the sum over clients, run as one fused map-reduce."""
  d = _per_client('federated_sum', value)._as_deferred()
  return FederatedValue(cohort.sum_clients(d.fn, d.args, d.in_axes), SERVER)


def federated_mean(value: FederatedValue, weight: FederatedValue | None = None) -> FederatedValue:
  """``{T}@CLIENTS -> T@SERVER``: ``sum_i w_i x_i / sum_i w_i`` (unweighted when weight is None).

  Args:
    value: the per-client values.
    weight: per-client scalar weights ``{float32}@CLIENTS``; clients of weight 0 do not count.
      The mean of a cohort whose weights are all 0 is 0.
  """
  _per_client('federated_mean', value)
  if weight is None:
    weight = federated_map(lambda x: jnp.ones((), jnp.float32), value)
  else:
    _per_client('federated_mean (weight)', weight)

  def weigh(x, w):
    w = jnp.asarray(w, jnp.float32)
    return tree.scale(x, w), w

  weighted_total, total_weight = federated_sum(federated_map(weigh, (value, weight))).value
  safe = jnp.where(total_weight > 0, total_weight, 1.0)
  return FederatedValue(jax.tree.map(lambda s: s / safe.astype(s.dtype), weighted_total), SERVER)


def _federated_extreme(op: str, reduce, value: FederatedValue) -> FederatedValue:
  stacked = _per_client(op, value).value
  return FederatedValue(jax.tree.map(lambda x: reduce(x, axis=0), stacked), SERVER)


def federated_min(value: FederatedValue) -> FederatedValue:
  """``{T}@CLIENTS -> T@SERVER``: the elementwise minimum over clients."""
  return _federated_extreme('federated_min', jnp.min, value)


def federated_max(value: FederatedValue) -> FederatedValue:
  """``{T}@CLIENTS -> T@SERVER``: the elementwise maximum over clients."""
  return _federated_extreme('federated_max', jnp.max, value)
