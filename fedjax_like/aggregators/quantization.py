"""Stochastic uniform quantization of client values before an inner aggregation (unbiased).

``UniformQuantizationFactory(inner_agg_factory, quantization_bits=b, threshold=t)`` quantizes each
tensor of a client's value with more than ``t`` elements as TFF's ``uniform_quantization``
encoder (``tensor_encoding``'s ``UniformQuantizationEncodingStage``) does, over the tensor's own
range (per client, per tensor):

    lo, hi = min(x), max(x)                      (or a fixed ``min_max``, x clipped to it first)
    s      = (x - lo) / (hi - lo) * (2^b - 1)     (0 when hi == lo)
    q      = floor(s) + Bernoulli(s - floor(s))  (stochastic; round(s) when stochastic=False)
    x_hat  = q / (2^b - 1) * (hi - lo) + lo

so ``E[x_hat] = x`` coordinate by coordinate (the rounding is unbiased; deterministic rounding is
not). The client would send ``q`` (``b`` bits per element) and ``[lo, hi]``; the server decodes
each client's message before the sum, as TFF does for this non-sum-commuting stage. The simulation
encodes and decodes on the client and hands ``x_hat`` to ``inner_agg_factory`` (default
``SumFactory()``), so the quantizer nests: ``zeroing_factory(Z, clipping_factory(C,
UniformQuantizationFactory(MeanFactory())))``, or inside the mean as TFF's
``compression_aggregator`` (``MeanFactory(EncodedSumFactory.quantize_above_threshold(8, 20000))``
quantizes the weighted values ``w_i x_i``).

``quantization_bits`` is 1..32. Above 24 bits the grid is finer than float32 resolves over the
range, so the quantization is exact to float32 rounding (and unbiased only to that rounding).
``EncodedSumFactory.quantize_above_threshold`` keeps TFF's limit of 16 bits.

**Randomness**: the rounding draws from ``state['rounding_key']`` (raw ``uint32[2]``), split each
round into the next state's key and the round's key; the round's key is split into one key per
client (``federated_map(..., key=)``: client ``i`` of the cohort gets the ``i``-th) and folded with
the leaf's index per tensor. A run is reproducible from ``seed`` and resumes bit-exactly from a
saved state; ``seed=None`` draws one from the OS. (TFF's encoder draws unseeded.)

A client whose value is not finite is passed on unchanged, so the inner aggregation treats it as
it would without compression (the mean zeroes and counts it).

Measurements ``{uniform_quantization: <inner's>, bits_per_client, float32_bits_per_client,
compression_ratio}`` (see :mod:`~fedjax_like.aggregators.compression`). State
``{inner_agg, rounding_key}``. The process is written with the intrinsics (a keyed
``federated_map``, then the inner ``next``); it has no map-reduce form, since per-client keys do
not fit one. An inner aggregation with client state keeps it (see
:mod:`~fedjax_like.aggregators.factory`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from fedjax_like.aggregators.compression import (
    bits_measurements,
    check_float_values,
    check_inner,
    check_threshold,
    compressed_leaves,
)
from fedjax_like.aggregators.factory import (
    AggregationProcess,
    ClientStatesOutput,
    MeasuredProcessOutput,
    _check_clients_value,
    call_next,
    tensor_type,
)
from fedjax_like.aggregators.quantile_estimation import seed_key
from fedjax_like.aggregators.sum_factory import SumFactory
from fedjax_like.core import FederatedValue, federated_map, tree

PyTree = Any
_F32 = jnp.float32


def check_bits(bits, low: int = 1, high: int = 32, what: str = 'quantization_bits') -> int:
  """``bits`` if it is an int in ``[low, high]``, else a clear error."""
  if isinstance(bits, bool) or not isinstance(bits, int):
    raise TypeError(f'{what} must be an int in [{low}, {high}]; got {type(bits).__name__}.')
  if not low <= bits <= high:
    raise ValueError(
        f'{what} must be in [{low}, {high}] (bits per quantized element); got {bits}. '
        'Use e.g. 8 for 4x less than float32.'
    )
  return bits


def quantize_dequantize(x: jax.Array, key: jax.Array | None, bits: int, stochastic: bool = True,
                        min_max: tuple[float, float] | None = None) -> jax.Array:
  """``x_hat``: ``x`` quantized to ``bits`` over its range (or ``min_max``) and decoded.

  Args:
    x: one tensor (any shape, floating).
    key: a ``jax.random`` key for the stochastic rounding (unused when ``stochastic=False``).
    bits: 1..32.
    stochastic: unbiased stochastic rounding (True) or round-to-nearest.
    min_max: a fixed ``(lo, hi)`` range (``x`` clipped to it), or None for ``x``'s own.

  Returns:
    ``x_hat``, of ``x``'s shape and dtype.
  """
  flat = x.astype(_F32).reshape(-1)
  if min_max is None:
    lo, hi = jnp.min(flat), jnp.max(flat)
  else:
    lo, hi = jnp.asarray(min_max[0], _F32), jnp.asarray(min_max[1], _F32)
    flat = jnp.clip(flat, lo, hi)
  levels = jnp.asarray(float(2**bits - 1), _F32)
  span = hi - lo
  scaled = jnp.where(span > 0, (flat - lo) / jnp.where(span > 0, span, 1.0), 0.0) * levels
  if stochastic:
    floor = jnp.floor(scaled)
    up = jax.random.uniform(key, flat.shape, _F32) < scaled - floor
    quantized = floor + up.astype(_F32)
  else:
    quantized = jnp.round(scaled)
  return (quantized / levels * span + lo).reshape(x.shape).astype(x.dtype)


class UniformQuantizationFactory:
  """Unbiased stochastic uniform quantization of client values, then ``inner_agg_factory``.

  Args:
    inner_agg_factory: the aggregation of the quantized values (default ``SumFactory()``); the
      result is weighted when it is.
    quantization_bits: bits per element, 1..32 (default 8).
    threshold: only tensors with MORE than this many elements are quantized (default 0: all).
    stochastic: unbiased stochastic rounding (default) or round-to-nearest (biased).
    min_max: a fixed ``(lo, hi)`` range for every tensor (values clipped to it); None (default):
      each client's tensor's own ``[min, max]``, sent with it.
    seed: the rounding keys' seed (None: a fresh seed from the OS).
  """

  def __init__(self, inner_agg_factory=None, quantization_bits: int = 8, threshold: int = 0, *,
               stochastic: bool = True, min_max: tuple[float, float] | None = None,
               seed: int | None = None):
    self._inner = SumFactory() if inner_agg_factory is None else inner_agg_factory
    check_inner(self._inner)
    self.quantization_bits = check_bits(quantization_bits)
    self.threshold = check_threshold(threshold)
    if not isinstance(stochastic, bool):
      raise TypeError(f'stochastic must be a bool; got {type(stochastic).__name__}.')
    self.stochastic = stochastic
    if min_max is not None:
      if len(min_max) != 2 or not float(min_max[0]) < float(min_max[1]):
        raise ValueError(f'min_max must be (lo, hi) with lo < hi; got {min_max!r}.')
      min_max = (float(min_max[0]), float(min_max[1]))
    self.min_max = min_max
    self._key = seed_key(seed)
    self.is_weighted = bool(self._inner.is_weighted)

  def __repr__(self) -> str:
    return (f'UniformQuantizationFactory({self._inner!r}, quantization_bits='
            f'{self.quantization_bits}, threshold={self.threshold})')

  def create(self, value_type: PyTree) -> AggregationProcess:
    """The process for client values of ``value_type`` (a pytree of floating types)."""
    value_type = tensor_type(value_type)
    check_float_values(value_type, 'UniformQuantizationFactory')
    inner = self._inner.create(value_type)
    bits, stochastic, min_max = self.quantization_bits, self.stochastic, self.min_max
    compressed = compressed_leaves(value_type, self.threshold)
    range_bits = 0 if min_max is not None else 64
    measured_bits = bits_measurements(value_type, lambda n: bits * n + range_bits, self.threshold)
    initial_key = self._key
    name = 'uniform_quantization'

    def encode(value, key):
      leaves, treedef = jax.tree.flatten(value)
      out = [
          quantize_dequantize(x, jax.random.fold_in(key, i), bits, stochastic, min_max)
          if squeeze else x
          for i, (x, squeeze) in enumerate(zip(leaves, compressed))
      ]
      return tree.where(tree.all_finite(value), jax.tree.unflatten(treedef, out), value)

    def initialize():
      return {'inner_agg': inner.initialize(), 'rounding_key': initial_key}

    def next_fn(state, value: FederatedValue, weight: FederatedValue | None = None,
                client_states: FederatedValue | None = None):
      _check_clients_value(name, 'the value', value, value_type)
      next_key, round_key = jax.random.split(state['rounding_key'])
      quantized = federated_map(encode, value, key=round_key)
      inner_out, new_client_states = call_next(inner, state['inner_agg'], quantized, weight,
                                               client_states)
      new_state = {'inner_agg': inner_out.state, 'rounding_key': next_key}
      measurements = {name: inner_out.measurements, **measured_bits}
      if inner.initial_client_state is None:
        return MeasuredProcessOutput(new_state, inner_out.result, measurements)
      return ClientStatesOutput(new_state, inner_out.result, measurements, new_client_states)

    return AggregationProcess(initialize, next_fn, value_type, self.is_weighted, None, name,
                              inner.initial_client_state)


class EncodedSumFactory:
  """TFF's quantized sum, for ports: only ``EncodedSumFactory.quantize_above_threshold(...)``.

  TFF's constructor takes ``tensor_encoding`` encoders, which do not exist here; its
  ``quantize_above_threshold`` is :class:`UniformQuantizationFactory` over ``SumFactory()``.
  """

  def __init__(self, *args, **kwargs):
    del args, kwargs
    raise TypeError(
        'EncodedSumFactory(encoder_fn) takes tensor_encoding encoders, which fedjax_like does not '
        'have. Use EncodedSumFactory.quantize_above_threshold(quantization_bits, threshold) or '
        'UniformQuantizationFactory(inner_agg_factory, quantization_bits, threshold).'
    )

  @classmethod
  def quantize_above_threshold(cls, quantization_bits: int = 8, threshold: int = 20000,
                               **kwargs) -> UniformQuantizationFactory:
    """The sum of values whose tensors with more than ``threshold`` elements are quantized.

    Args:
      quantization_bits: 1..16 (TFF's limit; :class:`UniformQuantizationFactory` takes up to 32).
      threshold: a non-negative int; smaller tensors are summed unmodified.
      **kwargs: ``stochastic`` (default True), ``min_max``, ``seed``.

    Returns:
      An unweighted factory (TFF's ``UnweightedAggregationFactory``).
    """
    check_bits(quantization_bits, 1, 16)
    unknown = set(kwargs) - {'stochastic', 'min_max', 'seed'}
    if unknown:
      raise TypeError(
          f'quantize_above_threshold got unknown arguments {sorted(unknown)}; it takes '
          'stochastic, min_max and seed.'
      )
    return UniformQuantizationFactory(SumFactory(), quantization_bits, check_threshold(threshold),
                                      **kwargs)
