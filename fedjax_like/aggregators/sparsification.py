"""Top-k sparsification of client values with error feedback (a per-client residual).

``TopKSparsificationFactory(inner_agg_factory, fraction=p, threshold=t)``: each client sends, for
every tensor of its value with more than ``t`` elements (``n`` of them), only the
``k = ceil(p n)`` coordinates of largest magnitude, and keeps what it did not send as a residual
``e_i`` that it adds to its next value (error feedback: Stich, Cordonnier, Jaggi 2018, "Sparsified
SGD with Memory", https://arxiv.org/abs/1809.07599; Karimireddy et al. 2019, "Error Feedback Fixes
SignSGD", https://arxiv.org/abs/1901.09847):

    a_i  = x_i + e_i                (e_i = 0 for a client never seen)
    s_i  = top_k(a_i)               (a_i on its k largest |a_ij|, else 0; ties: lower index)
    e_i <- a_i - s_i                 (the new client state)

and ``s_i`` goes to ``inner_agg_factory`` (default ``SumFactory()``). Nothing is lost: after any
number of rounds, ``sum of what each client sent + its residual = sum of its true values``.
Tensors with at most ``t`` elements are sent whole (their residual stays 0). With
``error_feedback=False`` the residual is dropped (plain top-k, biased) and the client state stays
zeros.

**Client state** (the contract is in :mod:`~fedjax_like.aggregators.factory`): the process's
``initial_client_state`` is zeros of the value type (float32), and

    next(state, value@CLIENTS, weight@CLIENTS | None, client_states@CLIENTS)
        -> ClientStatesOutput(state, result@SERVER, measurements, new_client_states@CLIENTS)

A client whose value (or residual sum) is not finite passes its value on unchanged (the inner
aggregation treats it as it would uncompressed: the mean zeroes and counts it) and keeps its old
residual, so one bad round never poisons its later ones.

Measurements ``{top_k: <inner's>, bits_per_client, float32_bits_per_client, compression_ratio}``
(``k x (32 + ceil(log2 n))`` bits per sparsified tensor: see
:mod:`~fedjax_like.aggregators.compression`). The process is written with the intrinsics (it has no
map-reduce form: client state does not fit one); the server state is the inner aggregation's.
"""

from __future__ import annotations

import math
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
    _check_clients_value,
    call_next,
    check_client_states,
    tensor_type,
)
from fedjax_like.aggregators.sum_factory import SumFactory
from fedjax_like.core import FederatedValue, federated_map, tree

PyTree = Any
_F32 = jnp.float32


def num_kept(num_elements: int, fraction: float) -> int:
  """``k = ceil(fraction * n)``, at least 1 and at most ``n``."""
  return max(1, min(num_elements, math.ceil(fraction * num_elements)))


def top_k_dense(x: jax.Array, k: int) -> jax.Array:
  """``x`` on its ``k`` largest-magnitude coordinates, zeros elsewhere (same shape, float32)."""
  flat = x.astype(_F32).reshape(-1)
  _, index = jax.lax.top_k(jnp.abs(flat), k)
  return jnp.zeros_like(flat).at[index].set(flat[index]).reshape(x.shape)


def index_bits(num_elements: int) -> int:
  """Bits to address one of ``n`` coordinates: ``ceil(log2 n)``, at least 1."""
  return max(1, math.ceil(math.log2(max(num_elements, 2))))


class TopKSparsificationFactory:
  """Top-k sparsification with error feedback before ``inner_agg_factory`` (client state).

  Args:
    inner_agg_factory: the aggregation of the sparse values (default ``SumFactory()``); the
      result is weighted when it is.
    fraction: the share ``p`` in (0, 1] of each tensor's coordinates sent (``ceil(p n)``).
    threshold: only tensors with MORE than this many elements are sparsified (default 0: all).
    error_feedback: keep the unsent part as the client's residual (default True).
  """

  def __init__(self, inner_agg_factory=None, fraction: float = 0.01, threshold: int = 0, *,
               error_feedback: bool = True):
    self._inner = SumFactory() if inner_agg_factory is None else inner_agg_factory
    check_inner(self._inner)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
      raise TypeError(f'fraction must be a float in (0, 1]; got {type(fraction).__name__}.')
    if not 0.0 < fraction <= 1.0:
      raise ValueError(
          f'fraction must be in (0, 1]: the share of each tensor\'s coordinates sent; got '
          f'{fraction}. Use e.g. 0.01 to send the largest 1%.'
      )
    self.fraction = float(fraction)
    self.threshold = check_threshold(threshold)
    if not isinstance(error_feedback, bool):
      raise TypeError(f'error_feedback must be a bool; got {type(error_feedback).__name__}.')
    self.error_feedback = error_feedback
    self.is_weighted = bool(self._inner.is_weighted)

  def __repr__(self) -> str:
    return (f'TopKSparsificationFactory({self._inner!r}, fraction={self.fraction}, '
            f'threshold={self.threshold}, error_feedback={self.error_feedback})')

  def create(self, value_type: PyTree) -> AggregationProcess:
    """The process for client values of ``value_type`` (a pytree of floating types)."""
    value_type = tensor_type(value_type)
    check_float_values(value_type, 'TopKSparsificationFactory')
    inner = self._inner.create(value_type)
    if inner.initial_client_state is not None:
      raise TypeError(f'TopKSparsificationFactory: the inner aggregation {inner.name!r} keeps '
                      'client state of its own; nesting two client states is not supported.')
    fraction, feedback = self.fraction, self.error_feedback
    compressed = compressed_leaves(value_type, self.threshold)
    measured_bits = bits_measurements(
        value_type, lambda n: num_kept(n, fraction) * (32 + index_bits(n)), self.threshold)
    residual_type = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, _F32), value_type)
    initial_client_state = jax.tree.map(lambda x: jnp.zeros(x.shape, _F32), value_type)
    name = 'top_k'

    def encode(value, residual):
      leaves, treedef = jax.tree.flatten(value)
      sums = [x.astype(_F32) + e for x, e in zip(leaves, jax.tree.leaves(residual))]
      sent = [top_k_dense(a, num_kept(a.size, fraction)) if squeeze else a
              for a, squeeze in zip(sums, compressed)]
      new_residual = [a - s for a, s in zip(sums, sent)] if feedback else [
          jnp.zeros_like(a) for a in sums]
      ok = tree.all_finite(value) & tree.all_finite(sums)
      sent = jax.tree.unflatten(treedef, [s.astype(x.dtype) for s, x in zip(sent, leaves)])
      new_residual = jax.tree.unflatten(jax.tree.structure(residual), new_residual)
      return tree.where(ok, sent, value), tree.where(ok, new_residual, residual)

    def next_fn(state, value: FederatedValue, weight: FederatedValue | None = None,
                client_states: FederatedValue | None = None):
      _check_clients_value(name, 'the value', value, value_type)
      check_client_states(name, client_states, residual_type)
      encoded = federated_map(encode, (value, client_states))
      inner_out, _ = call_next(inner, state, encoded[0], weight)
      measurements = {name: inner_out.measurements, **measured_bits}
      return ClientStatesOutput(inner_out.state, inner_out.result, measurements, encoded[1])

    return AggregationProcess(inner.initialize, next_fn, value_type, self.is_weighted, None, name,
                              initial_client_state)
