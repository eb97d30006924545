"""FederatedValue: a pytree with a placement, an optional client mask and deferred client work.

A CLIENTS value holds one member per client, stacked on a leading cohort axis ``[num_clients,
...]``, or a single member when ``all_equal`` (a broadcast value, never copied per client). A
cohort may be *ragged*: padding clients fill it to a fixed shape so one compiled program serves
every round. Their rows carry ``mask[i] = False`` and every reduction of :mod:`intrinsics`
ignores them (their outputs are replaced by the reduction's identity with ``where``, so even a NaN
computed on padding never leaks).

Client work is *deferred*: a value produced by ``federated_map`` records the per-client function
and its arguments; a reduction fuses it into one map-reduce handed to the cohort engine, and any
other use materializes it with :func:`fedjax_like.core.cohort.map_clients`.

This module holds the value type and the placement checks every operator shares; the operators
themselves are in :mod:`fedjax_like.core.intrinsics`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from fedjax_like.core import cohort
from fedjax_like.core.placements import CLIENTS, SERVER, FederatedType, Placement, type_of

PyTree = Any


class Deferred:
  """A per-client function not yet run: ``fn(*[arg per client])`` for args with ``in_axes``."""

  def __init__(self, fn: Callable[..., PyTree], args: tuple[PyTree, ...], in_axes: tuple):
    self.fn, self.args, self.in_axes = fn, tuple(args), tuple(in_axes)


class FederatedValue:
  """A pytree placed at SERVER or CLIENTS.

  Args:
    value: the pytree. Per-client values have leaves ``[num_clients, ...]``.
    placement: ``SERVER`` or ``CLIENTS``.
    all_equal: for CLIENTS values, True when every client holds the same value (stored once, with
      no cohort axis). Always True at SERVER.
    mask: for per-client values, bool ``[num_clients]``: False marks a padding client that every
      reduction ignores. None means every client is real.
  """

  def __init__(
      self,
      value: PyTree,
      placement: Placement,
      all_equal: bool = False,
      *,
      mask: jax.Array | None = None,
      _deferred: Deferred | None = None,
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
    self.mask = mask
    self._value = value
    self._deferred = _deferred

  @property
  def value(self) -> PyTree:
    """The underlying pytree (runs deferred client work, through the engine, if there is any)."""
    if self._deferred is not None:
      d = self._deferred
      self._value = cohort.map_clients(d.fn, d.args, d.in_axes)
      self._deferred = None
    return self._value

  @property
  def is_deferred(self) -> bool:
    return self._deferred is not None

  @property
  def num_clients(self) -> int | None:
    """The cohort size (padding included) of a per-client value; None for all-equal ones."""
    if self.all_equal:
      return None
    d = self._as_deferred()
    for arg, axis in zip(d.args, d.in_axes):
      if axis == 0:
        for leaf in jax.tree.leaves(arg):
          return int(jnp.shape(leaf)[0])
    return None if self.mask is None else int(self.mask.shape[0])

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
    masked = ', masked' if self.mask is not None else ''
    return f'FederatedValue({self.type_signature}{masked})'

  def __getitem__(self, key) -> FederatedValue:
    """Selects a field of a structured value, keeping its placement (and deferral and mask)."""
    if self.is_per_client():
      from fedjax_like.core.intrinsics import federated_map  # noqa: PLC0415 (cycle)

      return federated_map(lambda x: x[key], self)
    return FederatedValue(self.value[key], self.placement, self.all_equal)

  def is_per_client(self) -> bool:
    return self.placement is CLIENTS and not self.all_equal

  def _as_deferred(self) -> Deferred:
    """This per-client value as a computation (the identity over stored values)."""
    if self._deferred is not None:
      return self._deferred
    return Deferred(lambda x: x, (self._value,), (0,))

  def masked_deferred(
      self, identity: Callable[[jax.Array], jax.Array] = jnp.zeros_like
  ) -> Deferred:
    """The per-client computation with padding clients' outputs replaced by ``identity(x)``."""
    d = self._as_deferred()
    if self.mask is None:
      return d
    fn = d.fn

    def masked_fn(*args):
      out, keep = fn(*args[:-1]), args[-1]
      return jax.tree.map(lambda x: jnp.where(keep, x, identity(x)), out)

    return Deferred(masked_fn, d.args + (self.mask,), d.in_axes + (0,))


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
