"""A secure sum that really wraps around: ``tff.aggregators.SecureModularSumFactory``, simulated.

``SecureModularSumFactory(modulus)`` sums integer values modulo ``m``:

    result = (sum_i (x_i mod m)) mod m                          (values expected in [0, m))

and with ``symmetric_range=True`` in ``[-(m-1), m-1]`` (TFF's reduction: sum modulo ``m' = 2m - 1``,
then shift results ``>= m`` down by ``m'``). An input outside the range is not an error: it wraps,
as the protocol's arithmetic would. TFF's own simulation of the secure sum never overflows; here
the server also reports what the protocol would hide, so a too small modulus is visible:

- ``wrapped_coordinates``: coordinates whose true sum reached the modulus (the result wrapped;
  not with ``symmetric_range``, where negative values are encoded as wrapped residues);
- ``out_of_range_clients``: clients with some coordinate outside the expected range.

Each client's residue is split into 16-bit limbs summed with ``federated_secure_sum(bitwidth=32)``
(exact for fewer than 65,536 clients); the server reduces ``high * 2**16 + low`` modulo ``m`` in
uint32 arithmetic (``m <= 2**31``). In map-reduce form the same limbs go through ``federated_sum``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from fedjax_like.aggregators.factory import (
    AggregationProcess,
    MapReduceForm,
    MeasuredProcessOutput,
    _check_clients_value,
    format_type,
    settle,
    tensor_type,
)
from fedjax_like.core import (
    SERVER,
    FederatedValue,
    federated_map,
    federated_secure_sum,
    federated_sum,
    federated_value,
)

PyTree = Any
MAX_MODULUS = 2**31
MAX_CLIENTS = 2**16 - 1
_U32 = jnp.uint32


def _mod_limb_total(low: jax.Array, high: jax.Array, modulus: int) -> jax.Array:
  """``(high * 2**16 + low) mod m`` in uint32 without overflow (``m <= 2**31``)."""
  m = _U32(modulus)
  h = high % m
  for _ in range(16):  # h * 2**16 mod m by doubling: 2h < 2**32 since h < m <= 2**31
    h = (h << 1) % m
  return (h + low % m) % m


def _wrapped(low: jax.Array, high: jax.Array, modulus: int) -> jax.Array:
  """Whether the true sum ``high * 2**16 + low`` is ``>= m``."""
  shifted = high << 16
  total = shifted + low
  beyond_32_bits = (high >= _U32(2**16)) | (total < shifted)
  return beyond_32_bits | (total >= _U32(modulus))


class SecureModularSumFactory:
  """Sums integer values modulo ``modulus`` (``tff.aggregators.SecureModularSumFactory``).

  Args:
    modulus: ``m``, an int in ``[1, 2**31]``.
    symmetric_range: sum in ``[-(m-1), m-1]`` instead of ``[0, m-1]`` (then ``2m - 1 <= 2**31``).

  Raises:
    TypeError: a modulus that is not an int, or a non-bool ``symmetric_range``.
    ValueError: a modulus outside the supported range.
  """

  is_weighted = False

  def __init__(self, modulus: int, symmetric_range: bool = False):
    if isinstance(modulus, bool) or not isinstance(modulus, int):
      raise TypeError(f'modulus must be an int; got {type(modulus).__name__}.')
    if not isinstance(symmetric_range, bool):
      raise TypeError(f'symmetric_range must be a bool; got {symmetric_range!r}.')
    effective = 2 * modulus - 1 if symmetric_range else modulus
    if modulus <= 0 or effective > MAX_MODULUS:
      raise ValueError(
          f'modulus must be positive and, here, at most 2**31 (2**30 with symmetric_range); got '
          f'{modulus}. Sum wider values with SecureSumFactory and bounds.'
      )
    self.modulus, self.symmetric_range = modulus, symmetric_range
    self._effective = effective

  def __repr__(self) -> str:
    return f'SecureModularSumFactory({self.modulus}, symmetric_range={self.symmetric_range})'

  def create(self, value_type: PyTree) -> AggregationProcess:
    """The modular sum over integer values of ``value_type`` (at most 32-bit integers)."""
    value_type = tensor_type(value_type)
    leaves = jax.tree.leaves(value_type)
    if not leaves or not all(
        jnp.issubdtype(x.dtype, jnp.integer) and jnp.dtype(x.dtype).itemsize <= 4 for x in leaves
    ):
      raise TypeError(
          'SecureModularSumFactory sums integers of at most 32 bits; got '
          f'{format_type(value_type)}. Use SecureSumFactory with float bounds for floats.'
      )
    m, m_eff, symmetric = self.modulus, self._effective, self.symmetric_range
    lowest = -(m - 1) if symmetric else 0

    def work(prepared, value, weight):
      del prepared, weight

      def encode(x):
        if jnp.issubdtype(x.dtype, jnp.unsignedinteger):
          q = x.astype(_U32) % _U32(m_eff)
        elif m_eff == MAX_MODULUS:  # 2**31 does not fit in int32: the low 31 bits are x mod m
          q = jax.lax.bitcast_convert_type(x.astype(jnp.int32), _U32) & _U32(MAX_MODULUS - 1)
        else:
          q = jnp.mod(x.astype(jnp.int32), jnp.int32(m_eff)).astype(_U32)
        return q & _U32(0xFFFF), q >> 16

      leaves = jax.tree.leaves(value)
      out_of_range = jnp.any(jnp.stack([
          jnp.any((x.astype(jnp.int32) < lowest) | (x.astype(jnp.int32) > m - 1)) for x in leaves
      ]))
      return jax.tree.map(encode, value), out_of_range.astype(jnp.int32)

    def report(state, summed, limbs_summed=None):
      limbs, out_of_range = summed
      limbs = limbs if limbs_summed is None else limbs_summed
      specs, treedef = jax.tree.flatten(value_type)
      pairs = treedef.flatten_up_to(limbs)
      results, wrapped = [], jnp.zeros((), jnp.int32)
      for (low, high), spec in zip(pairs, specs):
        total = _mod_limb_total(low, high, m_eff).astype(jnp.int32)
        if symmetric:
          total = jnp.where(total >= m, total - m_eff, total)
        results.append(total.astype(spec.dtype))
        wrapped = wrapped + jnp.sum(_wrapped(low, high, m_eff).astype(jnp.int32))
      measurements = {'out_of_range_clients': out_of_range}
      if not symmetric:  # (residues of negative values always "wrap": not informative)
        measurements['wrapped_coordinates'] = wrapped
      return MeasuredProcessOutput(state, jax.tree.unflatten(treedef, results), measurements)

    form = MapReduceForm(lambda state: (), work, lambda state, summed: report(state, summed))
    name = 'secure_modular_sum'

    def next_fn(state, value: FederatedValue, weight: FederatedValue | None = None):
      del weight
      _check_clients_value(name, 'the value', value, value_type)
      if (value.num_clients or 0) > MAX_CLIENTS:
        raise ValueError(
            f'SecureModularSumFactory sums exactly for at most {MAX_CLIENTS} clients a round; got '
            f'{value.num_clients}. Use smaller cohorts.'
        )
      summands = federated_map(lambda v: work((), v, None), value)
      limbs = federated_secure_sum(summands[0], bitwidth=32)
      out_of_range = federated_sum(summands[1])
      out = federated_map(
          lambda l, r: tuple(report(state, (None, r), limbs_summed=l)), (limbs, out_of_range)
      )
      return settle(out)

    return AggregationProcess(lambda: (), next_fn, value_type, False, form, name)
