"""Secure summation of bounded values (``tff.aggregators.SecureSumFactory``), simulated.

Secure aggregation (Bonawitz et al. 2017) sums integers modulo ``2**b``: the server learns only
the sum. To sum other values securely, their range ``[lo, hi]`` is fixed in advance, each client
clips and encodes its value as an integer, and the server decodes the sum:

- **integer mode** (integer thresholds, integer values): ``q = clip(x, lo, hi) - lo`` in
  ``[0, hi - lo]`` (``ceil(log2(hi - lo + 1))`` bits, TFF's ``secagg_bitwidth``); the result is
  ``sum_i q_i + n lo``, exact (as int32: the true sum must fit in int32).
- **float mode** (float thresholds or estimation processes, float values): deterministic 32-bit
  quantization as TFF's ``secure_quantized_sum``, ``s = (2**32 - 1) / (hi - lo)``,
  ``q = round(clip(x, lo, hi) s) - round(lo s)`` clipped to ``[0, 2**32 - 1]``; the result is
  ``(sum_i q_i + n round(lo s)) / s``. TFF quantizes in float64; here in float32 (JAX's default),
  so the per-value error is about 1e-7 of the range instead of 1e-9.

With only ``upper_bound_threshold``, ``lo = -hi``. A bound given as an
:class:`~fedjax_like.aggregators.estimation.EstimationProcess` adapts between rounds: a single
process sees each client's ``max(|min x|, |max x|)``; two processes see the max and the min.

**The sum.** Each client's ``q`` (uint32) is split into two 16-bit limbs and each limb is summed
with ``federated_secure_sum(bitwidth=32)``: for fewer than 65,536 clients no limb sum can wrap,
so the decoded sum is exact (TFF's simulation sums in int64 and never wraps either). The
map-reduce form sums the same uint32 limbs with ``federated_sum``, so a learning process fuses it
and both paths agree bit for bit.

Measurements (TFF's): ``secure_upper_clipped_count`` and ``secure_lower_clipped_count`` (clients
with some coordinate above / below the bound), ``secure_upper_threshold``,
``secure_lower_threshold``. A NaN coordinate is encoded as 0 and an infinite one is clipped to the
bound (wrap the factory in ``zeroing_factory`` to drop such clients instead).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from fedjax_like.aggregators.estimation import EstimationProcess
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
    federated_broadcast,
    federated_map,
    federated_secure_sum,
    federated_sum,
    federated_value,
)

PyTree = Any
SECAGG_MAX = 2**32 - 1
MAX_CLIENTS = 2**16 - 1
_U32 = jnp.uint32


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _is_float(x) -> bool:
  return isinstance(x, float)


def _limbs(q: jax.Array) -> tuple[jax.Array, jax.Array]:
  return q & _U32(0xFFFF), q >> 16


def _limb_total_f32(low: jax.Array, high: jax.Array) -> jax.Array:
  """``high * 2**16 + low`` of summed limbs, as float32 (rounded to float32's precision)."""
  return high.astype(jnp.float32) * 65536.0 + low.astype(jnp.float32)


def _limb_total_u32(low: jax.Array, high: jax.Array) -> jax.Array:
  """``high * 2**16 + low`` of summed limbs, modulo 2**32."""
  return (high << 16) + low


class SecureSumFactory:
  """Sums bounded values with (simulated) secure aggregation (``tff.aggregators``' class).

  Args:
    upper_bound_threshold: an int (integer mode), a float or an :class:`EstimationProcess` (float
      mode): the largest value summed; larger coordinates are clipped to it.
    lower_bound_threshold: the smallest value (same kind as the upper one), or None for
      ``-upper_bound_threshold``.

  Raises:
    TypeError: thresholds of different kinds, or not numbers or processes.
    ValueError: bounds that do not enclose a range (``upper <= lower``, or a non-positive upper
      bound without a lower one).
  """

  is_weighted = False

  def __init__(self, upper_bound_threshold, lower_bound_threshold=None):
    upper, lower = upper_bound_threshold, lower_bound_threshold
    kinds = (_is_int, _is_float, lambda x: isinstance(x, EstimationProcess))
    kind = next((i for i, is_kind in enumerate(kinds) if is_kind(upper)), None)
    if kind is None:
      raise TypeError(
          'upper_bound_threshold must be an int (integer values), a float or an EstimationProcess '
          f'(floating values); got {type(upper).__name__}.'
      )
    if lower is not None and not kinds[kind](lower):
      raise TypeError(
          'upper_bound_threshold and lower_bound_threshold must be of the same kind; got '
          f'{type(upper).__name__} and {type(lower).__name__}.'
      )
    if kind < 2:
      if lower is None and upper <= 0:
        raise ValueError(
            f'upper_bound_threshold = {upper} alone must be positive: its negative is the lower '
            'bound. Pass a positive bound, or also lower_bound_threshold.'
        )
      if lower is not None and upper <= lower:
        raise ValueError(
            f'upper_bound_threshold ({upper}) must be larger than lower_bound_threshold '
            f'({lower}).'
        )
    self._upper, self._lower = upper, lower
    self._integer = kind == 0
    if self._integer:
      lo = -upper if lower is None else lower
      if upper - lo > 2**31 - 1:
        raise ValueError(
            f'SecureSumFactory sums int32 values: the range [{lo}, {upper}] spans more than '
            '2**31 - 1. Narrow the bounds.'
        )
      self.secagg_bitwidth = math.ceil(math.log2(upper - lo + 1))

  def __repr__(self) -> str:
    return f'SecureSumFactory({self._upper!r}, {self._lower!r})'

  # ----- bounds and their state ---------------------------------------------------------------

  def _processes(self) -> tuple[EstimationProcess | None, EstimationProcess | None]:
    upper = self._upper if isinstance(self._upper, EstimationProcess) else None
    lower = self._lower if isinstance(self._lower, EstimationProcess) else None
    return upper, lower

  def _initialize(self):
    upper, lower = self._processes()
    if upper is None:
      return ()
    return upper.initialize() if lower is None else (upper.initialize(), lower.initialize())

  def _bounds(self, state, dtype):
    upper, lower = self._processes()
    if upper is None:
      hi = self._upper
      lo = -self._upper if self._lower is None else self._lower
      return jnp.asarray(hi, dtype), jnp.asarray(lo, dtype)
    if lower is None:
      hi = jnp.asarray(upper.report(state), dtype)
      return hi, -hi
    return jnp.asarray(upper.report(state[0]), dtype), jnp.asarray(lower.report(state[1]), dtype)

  def _bound_forms(self):
    upper, lower = self._processes()
    forms = [p.map_reduce for p in (upper, lower) if p is not None]
    return forms if all(f is not None for f in forms) else None

  # ----- per-client encoding and server decoding ----------------------------------------------

  def _encode(self, value, hi, lo):
    """One client: (limbs of q per leaf, value max, value min), all before clipping."""
    leaves = jax.tree.leaves(value)
    vmax = jnp.max(jnp.stack([jnp.max(x) for x in leaves]))
    vmin = jnp.min(jnp.stack([jnp.min(x) for x in leaves]))
    if self._integer:
      q = jax.tree.map(lambda x: (jnp.clip(x, lo, hi) - lo).astype(_U32), value)
    else:
      scale = jnp.where(hi > lo, jnp.float32(SECAGG_MAX) / (hi - lo).astype(jnp.float32), 0.0)
      lo_q = jnp.round(lo.astype(jnp.float32) * scale)

      def quantize(x):
        x = jnp.where(jnp.isnan(x), jnp.zeros_like(x), x)  # a NaN coordinate counts as 0
        scaled = jnp.round(jnp.clip(x, lo, hi).astype(jnp.float32) * scale) - lo_q
        return jnp.clip(scaled, 0.0, 4294967040.0).astype(_U32)  # largest float32 < 2**32

      q = jax.tree.map(quantize, value)
    return jax.tree.map(_limbs, q), vmax, vmin

  def _decode(self, limbs, n, hi, lo, value_type):
    def leaf(pair, spec):
      low, high = pair
      if self._integer:
        total = _limb_total_u32(low, high) + (n.astype(_U32) * lo.astype(jnp.int32).astype(_U32))
        return jax.lax.bitcast_convert_type(total, jnp.int32).astype(spec.dtype)
      scale = jnp.where(hi > lo, jnp.float32(SECAGG_MAX) / (hi - lo).astype(jnp.float32), 0.0)
      lo_q = jnp.round(lo.astype(jnp.float32) * scale)
      total = _limb_total_f32(low, high) + lo_q * n.astype(jnp.float32)
      return jnp.where(scale > 0, total / jnp.where(scale > 0, scale, 1.0), 0.0).astype(spec.dtype)

    specs, treedef = jax.tree.flatten(value_type)
    pairs = treedef.flatten_up_to(limbs)
    return jax.tree.unflatten(treedef, [leaf(p, spec) for p, spec in zip(pairs, specs)])

  def _new_state(self, state, bound_summed):
    upper, lower = self._processes()
    if upper is None:
      return state
    if lower is None:
      return upper.map_reduce.update(state, bound_summed[0])
    return (upper.map_reduce.update(state[0], bound_summed[0]),
            lower.map_reduce.update(state[1], bound_summed[1]))

  def _bound_work(self, prepared, vmax, vmin):
    upper, lower = self._processes()
    if upper is None:
      return ()
    if lower is None:
      absmax = jnp.maximum(jnp.abs(vmax), jnp.abs(vmin)).astype(jnp.float32)
      return (upper.map_reduce.work(prepared[0], absmax),)
    return (upper.map_reduce.work(prepared[0], vmax.astype(jnp.float32)),
            lower.map_reduce.work(prepared[1], vmin.astype(jnp.float32)))

  def _bound_prepare(self, state):
    upper, lower = self._processes()
    if upper is None:
      return ()
    if lower is None:
      return (upper.map_reduce.prepare(state),)
    return (upper.map_reduce.prepare(state[0]), lower.map_reduce.prepare(state[1]))

  # ----- the process ---------------------------------------------------------------------------

  def _check_value_type(self, value_type):
    leaves = jax.tree.leaves(value_type)
    dtypes = {jnp.dtype(x.dtype) for x in leaves}
    if len(dtypes) != 1:
      raise TypeError(
          f'SecureSumFactory needs values of one dtype; got {format_type(value_type)}. Use one '
          'SecureSumFactory per dtype.'
      )
    (dtype,) = dtypes
    if self._integer and not (jnp.issubdtype(dtype, jnp.integer) and dtype.itemsize <= 4):
      raise TypeError(
          'SecureSumFactory with integer thresholds sums integer values of at most 32 bits; got '
          f'{format_type(value_type)}. Pass float thresholds (e.g. 1.0) for floating values.'
      )
    if not self._integer and not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(
          'SecureSumFactory with float thresholds sums floating values; got '
          f'{format_type(value_type)}. Pass int thresholds for integer values.'
      )
    return dtype

  def create(self, value_type: PyTree) -> AggregationProcess:
    """The secure sum over values of ``value_type`` (one dtype, integer or float by mode)."""
    value_type = tensor_type(value_type)
    dtype = self._check_value_type(value_type)
    if self._bound_forms() is None:
      raise TypeError('SecureSumFactory needs bound processes in map-reduce form.')

    def prepare(state):
      hi, lo = self._bounds(state, dtype)
      return hi, lo, self._bound_prepare(state)

    def work(prepared, value, weight):
      del weight
      hi, lo, bound_prepared = prepared
      limbs, vmax, vmin = self._encode(value, hi, lo)
      counts = ((vmax > hi).astype(jnp.int32), (vmin < lo).astype(jnp.int32),
                jnp.ones((), jnp.int32))
      return limbs, counts, self._bound_work(bound_prepared, vmax, vmin)

    def report(state, summed, limbs_summed=None):
      limbs, (upper_count, lower_count, n), bound_summed = summed
      hi, lo = self._bounds(state, dtype)
      result = self._decode(limbs if limbs_summed is None else limbs_summed, n, hi, lo, value_type)
      measurements = {
          'secure_upper_clipped_count': upper_count,
          'secure_lower_clipped_count': lower_count,
          'secure_upper_threshold': hi,
          'secure_lower_threshold': lo,
      }
      return MeasuredProcessOutput(self._new_state(state, bound_summed), result, measurements)

    form = MapReduceForm(prepare, work, lambda state, summed: report(state, summed))
    name = 'secure_sum'

    def next_fn(state, value: FederatedValue, weight: FederatedValue | None = None):
      del weight
      _check_clients_value(name, 'the value', value, value_type)
      if (value.num_clients or 0) > MAX_CLIENTS:
        raise ValueError(
            f'SecureSumFactory sums exactly for at most {MAX_CLIENTS} clients a round; got '
            f'{value.num_clients}. Use smaller cohorts.'
        )
      prepared = federated_broadcast(federated_value(prepare(state), SERVER))
      summands = federated_map(lambda b, v: work(b, v, None), (prepared, value))
      limbs = federated_secure_sum(summands[0], bitwidth=32)  # the secure part: 32-bit limbs
      rest = federated_sum(federated_map(lambda s: (s[1], s[2]), summands))
      out = federated_map(
          lambda l, r: tuple(report(state, (None, r[0], r[1]), limbs_summed=l)), (limbs, rest)
      )
      return settle(out)

    return AggregationProcess(self._initialize, next_fn, value_type, False, form, name)
