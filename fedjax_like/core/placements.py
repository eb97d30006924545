"""Placements and federated types: where a value lives, printed as TFF prints it.

A federated value is a pytree placed at ``SERVER`` (one value) or at ``CLIENTS`` (one value per
client, stacked on a leading cohort axis, or one value known to be equal on every client:
``all_equal``, which is how a broadcast value is held without copying it ``n`` times).

Types print in TFF's notation so users recognise them: ``float32[10]@SERVER``,
``{float32[10]}@CLIENTS`` (one per client), ``float32[10]@CLIENTS`` (all equal), and structures as
``<a=float32[2],b=int32>``.
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


def format_member_type(member: PyTree) -> str:
  """TFF-style text for a pytree of shapes: ``float32[10]``, ``<w=float32[784,10],b=float32[10]>``."""
  if member is None or (isinstance(member, (tuple, list, dict)) and not member):
    return '<>'
  if isinstance(member, Mapping):
    return '<' + ','.join(f'{k}={format_member_type(v)}' for k, v in member.items()) + '>'
  if hasattr(member, '_fields') and isinstance(member, tuple):  # NamedTuple
    return (
        '<' + ','.join(f'{k}={format_member_type(getattr(member, k))}' for k in member._fields) + '>'
    )
  if isinstance(member, Sequence) and not isinstance(member, str):
    return '<' + ','.join(format_member_type(v) for v in member) + '>'
  if dataclasses.is_dataclass(member) and not isinstance(member, type):
    fields = dataclasses.fields(member)
    return '<' + ','.join(f'{f.name}={format_member_type(getattr(member, f.name))}' for f in fields) + '>'
  shape = tuple(getattr(member, 'shape', np.shape(member)))
  dtype = np.dtype(getattr(member, 'dtype', np.asarray(member).dtype)).name
  return dtype + (f'[{",".join(str(d) for d in shape)}]' if shape else '')


@dataclasses.dataclass(frozen=True)
class FederatedType:
  """The type of a federated value: member type (pytree of shapes), placement and all_equal."""

  member: PyTree
  placement: Placement
  all_equal: bool

  def __str__(self) -> str:
    text = format_member_type(self.member)
    if self.placement is CLIENTS and not self.all_equal:
      text = '{' + text + '}'
    return f'{text}@{self.placement}'

  __repr__ = __str__


def shape_struct(tree: PyTree, drop_leading: bool = False) -> PyTree:
  """The pytree of ``jax.ShapeDtypeStruct`` of ``tree`` (without the cohort axis if asked)."""

  def one(x):
    shape, dtype = np.shape(x), getattr(x, 'dtype', np.asarray(x).dtype)
    return jax.ShapeDtypeStruct(shape[1:] if drop_leading else shape, dtype)

  return jax.tree.map(one, tree)


def type_of(value: PyTree, placement: Placement, all_equal: bool) -> FederatedType:
  """The :class:`FederatedType` of a concrete or traced pytree at ``placement``."""
  per_client = placement is CLIENTS and not all_equal
  return FederatedType(shape_struct(value, drop_leading=per_client), placement, all_equal)
