"""Secure summation with a bit width: integer sums modulo ``2**bitwidth``, as secure aggregation.

``federated_secure_sum({x}@CLIENTS, bitwidth)`` returns ``(sum_i x_i) mod 2**bitwidth`` at the
server: the result a secure aggregation protocol (Bonawitz et al., 2017, "Practical Secure
Aggregation for Privacy-Preserving Machine Learning") computes when every client masks its value
in the group of integers modulo ``2**bitwidth``. As in TFF's ``federated_secure_sum_bitwidth``, the
server learns only the modular sum; the simulation can also report what the protocol would hide:

- ``overflow``: the true sum of the (in-range) values reached ``2**bitwidth``, so the modular sum
  wrapped around, or some client's value was outside ``[0, 2**bitwidth)`` (it is then reduced
  modulo ``2**bitwidth`` before summing, as the protocol's arithmetic would do).

Detection is exact: each value is split into two 16-bit limbs summed separately in ``uint32``,
which cannot wrap for cohorts of fewer than 65,536 clients (larger cohorts are rejected).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from fedjax_like.core.values import FederatedValue, expect_per_client, reduce_to_server

PyTree = Any

MAX_BITWIDTH = 32
MAX_CLIENTS = 2**16 - 1


def _check_leaf(leaf: jax.ShapeDtypeStruct, bitwidth: int, value: FederatedValue) -> None:
  dtype = jnp.dtype(leaf.dtype)
  if not jnp.issubdtype(dtype, jnp.integer) or dtype.itemsize > 4:
    raise TypeError(
        f'federated_secure_sum sums integers of at most 32 bits; got {value.type_signature}. '
        'Quantize floating values first (e.g. round(x * scale) into [0, 2**bitwidth)).'
    )
  capacity = dtype.itemsize * 8 - (1 if jnp.issubdtype(dtype, jnp.signedinteger) else 0)
  if bitwidth > capacity:
    raise TypeError(
        f'federated_secure_sum with bitwidth={bitwidth} needs a dtype holding 2**{bitwidth}-1; '
        f'got {value.type_signature} ({dtype.name} holds {capacity} bits). Use uint32 values.'
    )


def _as_uint32(x: jax.Array) -> jax.Array:
  """The two's-complement bits of an integer array as uint32 (negative values wrap)."""
  if jnp.issubdtype(x.dtype, jnp.signedinteger):
    return jax.lax.bitcast_convert_type(x.astype(jnp.int32), jnp.uint32)
  return x.astype(jnp.uint32)


def _limbs(x: jax.Array, bitwidth: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One client's leaf as (low 16 bits, high bits, out-of-range flag), all uint32."""
  top = 2**bitwidth - 1
  out_of_range = x > jnp.asarray(top, x.dtype)
  if jnp.issubdtype(x.dtype, jnp.signedinteger):
    out_of_range = out_of_range | (x < 0)
  bits = _as_uint32(x)
  if bitwidth < MAX_BITWIDTH:
    bits = bits & jnp.uint32(top)
  return bits & jnp.uint32(0xFFFF), bits >> 16, out_of_range.astype(jnp.uint32)


def _finish(low, high, out_of_range, bitwidth: int, dtype) -> tuple[jax.Array, jax.Array]:
  """The modular sum and the overflow flag from the clients' summed limbs."""
  low, high = low.astype(jnp.uint32), high.astype(jnp.uint32)
  high = high + (low >> 16)  # carry the low limb's overflow; < 2**32 for < 65,536 clients
  low = low & jnp.uint32(0xFFFF)
  total = (high << 16) + low  # wraps modulo 2**32, and 2**bitwidth divides 2**32
  if bitwidth < MAX_BITWIDTH:
    total = total & jnp.uint32(2**bitwidth - 1)
  if bitwidth >= 16:
    overflow = high >= jnp.uint32(2 ** (bitwidth - 16))
  else:
    overflow = (high > 0) | (low >= jnp.uint32(2**bitwidth))
  return total.astype(dtype), overflow | (out_of_range > 0)


def federated_secure_sum(
    value: FederatedValue, bitwidth: int, *, with_overflow: bool = False
) -> FederatedValue | tuple[FederatedValue, FederatedValue]:
  """``{T}@CLIENTS -> T@SERVER``: the sum over real clients modulo ``2**bitwidth``.

  Args:
    value: per-client integer values (any pytree; int8..int32, uint8..uint32), each expected in
      ``[0, 2**bitwidth)``. Masked padding clients contribute nothing.
    bitwidth: 1 to 32; the dtype must hold ``2**bitwidth - 1`` (so 32 needs uint32).
    with_overflow: also return the overflow report.

  Returns:
    ``sum@SERVER`` (same structure and dtypes as one client's value), or, with ``with_overflow``,
    ``(sum@SERVER, overflow@SERVER)`` where ``overflow`` is a bool pytree of the same shapes: True
    where the true sum was ``>= 2**bitwidth`` or a client's value was out of range.

  Raises:
    TypeError: for non-integer values or a bitwidth the dtype cannot hold.
    ValueError: for a bitwidth outside 1..32 or a cohort of 65,536 clients or more.
  """
  expect_per_client('federated_secure_sum', value)
  if not isinstance(bitwidth, int) or not 1 <= bitwidth <= MAX_BITWIDTH:
    raise ValueError(f'federated_secure_sum bitwidth must be an int in 1..32; got {bitwidth!r}.')
  member = value.type_signature.member
  for leaf in jax.tree.leaves(member):
    _check_leaf(leaf, bitwidth, value)
  num_clients = value.num_clients or 0
  if num_clients > MAX_CLIENTS:
    raise ValueError(
        f'federated_secure_sum detects overflow exactly for at most {MAX_CLIENTS} clients; got a '
        f'cohort of {num_clients}. Split the cohort and add the partial sums modulo 2**bitwidth.'
    )
  program = value.masked_program().then(
      lambda out: jax.tree.map(lambda x: _limbs(x, bitwidth), out)
  )
  leaves, treedef = jax.tree.flatten(member)

  def finish(sums):
    sum_leaves = treedef.flatten_up_to(sums)
    results = [_finish(*limbs, bitwidth, leaf.dtype) for limbs, leaf in zip(sum_leaves, leaves)]
    return (jax.tree.unflatten(treedef, [r[0] for r in results]),
            jax.tree.unflatten(treedef, [r[1] for r in results]))

  both = reduce_to_server(value, program, finish)
  if not with_overflow:
    return both[0]
  return both[0], both[1]


def federated_secure_sum_bitwidth(value: FederatedValue, bitwidth: int) -> FederatedValue:
  """TFF's name for :func:`federated_secure_sum` (without the overflow report)."""
  return federated_secure_sum(value, bitwidth)
