"""Federated types and signatures print as TFF prints them; member specs; assignability."""

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_like.core import (
    CLIENTS,
    SERVER,
    FederatedType,
    FunctionType,
    type_at_clients,
    type_at_server,
)
from fedjax_like.core.placements import format_type, type_of

F10 = jax.ShapeDtypeStruct((10,), jnp.float32)


def test_federated_types_print_like_tff():
  assert str(type_at_server(F10)) == 'float32[10]@SERVER'
  assert str(type_at_clients(F10)) == '{float32[10]}@CLIENTS'
  assert str(type_at_clients(F10, all_equal=True)) == 'float32[10]@CLIENTS'
  assert str(type_at_server(jnp.int32)) == 'int32@SERVER'
  layer = type_at_server({'w': np.zeros((2, 3)), 'b': np.zeros(3)})
  assert str(layer) == '<b=float32[3],w=float32[2,3]>@SERVER'
  assert str(type_at_server(jax.random.key(0))) == 'key<fry>@SERVER'
  assert str(FederatedType(None, CLIENTS, False)) == '{?}@CLIENTS'


def test_function_types_print_like_tff():
  one = FunctionType({'x': type_at_clients(jnp.float32)}, type_at_server(jnp.float32))
  assert str(one) == '({float32}@CLIENTS -> float32@SERVER)'
  two = FunctionType(
      {'state': type_at_server(F10), 'data': type_at_clients(F10)},
      (type_at_server(F10), {'loss': type_at_server(jnp.float32)}),
  )
  assert str(two) == (
      '(<state=float32[10]@SERVER,data={float32[10]}@CLIENTS> -> '
      '<float32[10]@SERVER,<loss=float32@SERVER>>)'
  )
  assert str(FunctionType({}, type_at_server(jnp.int32))) == '( -> int32@SERVER)'
  assert format_type((type_at_server(jnp.int32),)) == '<int32@SERVER>'


def test_type_of_drops_the_cohort_axis_and_canonicalizes():
  assert str(type_of(np.zeros((4, 10)), CLIENTS, False)) == '{float32[10]}@CLIENTS'
  assert str(type_of(np.zeros((4, 10)), CLIENTS, True)) == 'float32[4,10]@CLIENTS'
  assert str(type_of(1.0, SERVER, True)) == 'float32@SERVER'


def test_assignability_compares_placement_structure_shape_and_dtype():
  declared = type_at_clients(F10)
  assert declared.is_assignable_from(type_of(np.zeros((3, 10), np.float32), CLIENTS, False))
  assert not declared.is_assignable_from(type_of(np.zeros((3, 9), np.float32), CLIENTS, False))
  assert not declared.is_assignable_from(type_of(np.zeros((3, 10), np.int32), CLIENTS, False))
  assert not declared.is_assignable_from(type_at_server(F10))
  assert FederatedType(None, SERVER, True).is_assignable_from(type_at_server({'a': F10}))
