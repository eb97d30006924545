"""Placements and federated types: where a value lives, printed as TFF prints it.

A federated value is a pytree placed at ``SERVER`` (one value) or at ``CLIENTS`` (one value per
client, stacked on a leading cohort axis, or one value known to be equal on every client:
``all_equal``, which is how a broadcast value is held without copying it ``n`` times).

Types print in TFF's notation so users recognise them: ``float32[10]@SERVER``,
``{float32[10]}@CLIENTS`` (one per client), ``float32[10]@CLIENTS`` (all equal), structures as
``<a=float32[2],b=int32>``, and a computation's :class:`FunctionType` as
``(<state=float32[10]@SERVER,data={float32[10]}@CLIENTS> -> <float32[10]@SERVER,float32@SERVER>)``.

:func:`type_at_server` and :func:`type_at_clients` build types from member specs (as
``tff.type_at_server`` / ``tff.type_at_clients`` do), for declaring a federated computation's
parameters.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

PyTree = Any


class Placement(enum.Enum):
  SERVER = 'SERVER'
  CLIENTS = 'CLIENTS'

  def __str__(self) -> str:
    return self.value

  def __repr__(self) -> str:
    return self.value


SERVER = Placement.SERVER
CLIENTS = Placement.CLIENTS


def _dtype_name(dtype) -> str:
  if jax.dtypes.issubdtype(dtype, jax.dtypes.extended):  # e.g. typed PRNG keys: key<fry>
    return str(dtype)
  return np.dtype(dtype).name


def _format_struct(node: Any, leaf_format) -> str | None:
  """``<...>`` text for a dict / NamedTuple / sequence / dataclass node, else None."""
  if node is None or (isinstance(node, (tuple, list, dict)) and not node):
    return '<>'
  if isinstance(node, Mapping):
    return '<' + ','.join(f'{k}={leaf_format(v)}' for k, v in node.items()) + '>'
  if hasattr(node, '_fields') and isinstance(node, tuple):  # NamedTuple
    return '<' + ','.join(f'{k}={leaf_format(getattr(node, k))}' for k in node._fields) + '>'
  if isinstance(node, Sequence) and not isinstance(node, str):
    return '<' + ','.join(leaf_format(v) for v in node) + '>'
  if dataclasses.is_dataclass(node) and not isinstance(node, type):
    fields = dataclasses.fields(node)
    return '<' + ','.join(f'{f.name}={leaf_format(getattr(node, f.name))}' for f in fields) + '>'
  return None


def format_member_type(member: PyTree) -> str:
  """TFF-style text for a pytree of shapes: ``float32[10]``, ``<w=float32[784,10],b=float32[10]>``.
  """
  struct = _format_struct(member, format_member_type)
  if struct is not None:
    return struct
  shape = tuple(getattr(member, 'shape', np.shape(member)))
  dtype = getattr(member, 'dtype', None)
  dtype = _dtype_name(dtype if dtype is not None else np.asarray(member).dtype)
  return dtype + (f'[{",".join(str(d) for d in shape)}]' if shape else '')


@dataclasses.dataclass(frozen=True)
class FederatedType:
  """The type of a federated value: member type (pytree of shapes), placement and all_equal.

  Attributes:
    member: a pytree of ``jax.ShapeDtypeStruct``, one client's (or the server's) value; None when
      only the placement is known (printed ``?``).
    placement: ``SERVER`` or ``CLIENTS``.
    all_equal: True for SERVER values and for CLIENTS values every client holds identically.
  """

  member: PyTree
  placement: Placement
  all_equal: bool

  def __str__(self) -> str:
    text = '?' if self.member is None else format_member_type(self.member)
    if self.placement is CLIENTS and not self.all_equal:
      text = '{' + text + '}'
    return f'{text}@{self.placement}'

  __repr__ = __str__

  def is_assignable_from(self, other: FederatedType) -> bool:
    """True when a value of type ``other`` may be passed where this type is expected."""
    if self.placement is not other.placement or self.all_equal != other.all_equal:
      return False
    if self.member is None:
      return True
    return _same_member(self.member, other.member)


def _same_member(a: PyTree, b: PyTree) -> bool:
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  if tree_a != tree_b:
    return False
  return all(
      x.shape == y.shape
      and jax.dtypes.canonicalize_dtype(x.dtype) == jax.dtypes.canonicalize_dtype(y.dtype)
      for x, y in zip(leaves_a, leaves_b)
  )


def format_type(value_type: Any) -> str:
  """Text for a :class:`FederatedType`, or a structure (tuple, dict, NamedTuple) of them."""
  if isinstance(value_type, (FederatedType, FunctionType)):
    return str(value_type)
  struct = _format_struct(value_type, format_type)
  return struct if struct is not None else format_member_type(value_type)


@dataclasses.dataclass(frozen=True)
class FunctionType:
  """A federated computation's type: named parameters and a result.

  Attributes:
    parameter: ``{name: FederatedType}`` in the order of the Python parameters.
    result: a :class:`FederatedType` or a structure (tuple, dict, NamedTuple) of them.

  Prints as TFF does: one parameter without its name, ``({float32}@CLIENTS -> float32@SERVER)``;
  several as a named structure, ``(<state=float32@SERVER,data={float32}@CLIENTS> -> ...)``.
  """

  parameter: dict
  result: Any

  def __str__(self) -> str:
    params = list(self.parameter.items())
    if not params:
      return f'( -> {format_type(self.result)})'
    if len(params) == 1:
      text = format_type(params[0][1])
    else:
      text = '<' + ','.join(f'{name}={format_type(t)}' for name, t in params) + '>'
    return f'({text} -> {format_type(self.result)})'

  __repr__ = __str__


def _member_spec(spec: Any) -> PyTree:
  """A member type from a dtype, a ``ShapeDtypeStruct`` pytree or example arrays."""
  if spec is None:
    return None
  if isinstance(spec, (type, np.dtype, str)):
    return jax.ShapeDtypeStruct((), np.dtype(spec))
  try:
    return shape_struct(spec)
  except TypeError as error:
    raise TypeError(
        f'Cannot read a member type from {spec!r}: pass a dtype (jnp.float32), a '
        'jax.ShapeDtypeStruct pytree or example arrays.'
    ) from error


def type_at_server(member: Any = None) -> FederatedType:
  """``T@SERVER`` for a member spec: a dtype, a ``ShapeDtypeStruct`` pytree or example arrays."""
  return FederatedType(_member_spec(member), SERVER, True)


def type_at_clients(member: Any = None, all_equal: bool = False) -> FederatedType:
  """``{T}@CLIENTS`` (or ``T@CLIENTS`` with ``all_equal``) for one client's member spec."""
  return FederatedType(_member_spec(member), CLIENTS, all_equal)


def shape_struct(tree: PyTree, drop_leading: bool = False) -> PyTree:
  """The pytree of ``jax.ShapeDtypeStruct`` of ``tree`` (without the cohort axis if asked).

  Dtypes are canonicalized as ``jax.jit`` sees them: a Python float is ``float32`` unless x64 is on.
  """

  def one(x):
    shape, dtype = np.shape(x), getattr(x, 'dtype', None)
    dtype = dtype if dtype is not None else np.asarray(x).dtype
    if not jax.dtypes.issubdtype(dtype, jax.dtypes.extended):
      dtype = jax.dtypes.canonicalize_dtype(dtype)  # as jit will see it (float64 -> float32)
    return jax.ShapeDtypeStruct(shape[1:] if drop_leading else shape, dtype)

  return jax.tree.map(one, tree)


def type_of(value: PyTree, placement: Placement, all_equal: bool) -> FederatedType:
  """The :class:`FederatedType` of a concrete or traced pytree at ``placement``."""
  per_client = placement is CLIENTS and not all_equal
  return FederatedType(shape_struct(value, drop_leading=per_client), placement, all_equal)
