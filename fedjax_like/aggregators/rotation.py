"""Random Hadamard rotation of client values around an inner aggregation (before quantization).

``HadamardTransformFactory(inner_agg_factory=None, num_repeats=1)`` as TFF's
(``tff.aggregators.HadamardTransformFactory``). On the clients, each tensor of the value is

1. flattened to ``d`` elements and zero-padded to ``d2``, the smallest power of 2 ``>= d``;
2. multiplied by random signs ``D`` (Rademacher, +1/-1) and
3. rotated by the normalized Walsh-Hadamard matrix ``H`` (``H = H^T = H^-1``, ``H_ij = +-1 /
   sqrt(d2)``), in ``O(d2 log d2)`` by the fast transform;

steps 2-3 repeated ``num_repeats`` times with fresh signs. The rotated float32 vectors
``[d2]`` go to ``inner_agg_factory`` (default ``SumFactory()``), and the server inverts the steps on
its result (``x = D H y`` per repeat, in reverse order), slices off the padding and restores each
tensor's shape and dtype. Every client of a round uses the same signs, so the rotation commutes
with any linear aggregation (sum, mean, weighted mean) and is undone once, after it.

Why: a rotation spreads a vector's energy evenly over its coordinates, so ``max - min`` of the
rotated tensor shrinks (for a spiky vector, by up to ``sqrt(d2)``) and uniform quantization inside
loses less: ``HadamardTransformFactory(UniformQuantizationFactory(MeanFactory(), 8))`` (Suresh et
al. 2017, https://arxiv.org/abs/1611.00429).

**Signs** come from a key in the state: TFF's state ``(inner_state, seed)``, here ``(inner_state,
key)`` with ``key`` raw ``uint32[2]``, split each round into the next state's key and the round's
key; tensor ``l``'s repeat ``r`` folds ``l * num_repeats + r`` into the round's key. Reproducible
from ``seed`` (``None``: a fresh OS seed); TFF seeds from a timestamp.

Departure from TFF: TFF takes only an unweighted inner factory; here a weighted one is allowed too
(the weights pass through: a weighted mean commutes with the rotation as well). Measurements
``{hd: <inner's>}`` (TFF's). When the inner aggregation comes in map-reduce form so does the
rotation (a learning process fuses it into the round); otherwise ``next`` is the intrinsics chain
``federated_map`` (rotate), inner ``next``, ``federated_map`` at SERVER (invert). An inner
aggregation with client state keeps it.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from fedjax_like.aggregators.compression import check_inner
from fedjax_like.aggregators.factory import (
    AggregationProcess,
    ClientStatesOutput,
    MapReduceForm,
    MeasuredProcessOutput,
    _check_clients_value,
    build_map_reduce_aggregation,
    call_next,
    format_type,
    tensor_type,
)
from fedjax_like.aggregators.quantile_estimation import seed_key
from fedjax_like.aggregators.sum_factory import SumFactory
from fedjax_like.core import (
    SERVER,
    FederatedValue,
    federated_broadcast,
    federated_map,
    federated_value,
)

PyTree = Any
_F32 = jnp.float32


def padded_size(num_elements: int) -> int:
  """The smallest power of 2 that is ``>= num_elements`` (1 for 0 or 1)."""
  return 1 if num_elements <= 1 else 2 ** math.ceil(math.log2(num_elements))


def fast_walsh_hadamard_transform(x: jax.Array) -> jax.Array:
  """``H x`` for ``x`` ``[..., d]`` with ``d`` a power of 2; ``H`` the normalized (Sylvester)
  Hadamard matrix, so the transform is its own inverse. ``O(d log d)``."""
  d = x.shape[-1]
  if d & (d - 1):
    raise ValueError(f'The fast Walsh-Hadamard transform needs a power-of-2 length; got {d}.')
  batch = x.shape[:-1]
  h = 1
  while h < d:
    blocks = x.reshape(batch + (d // (2 * h), 2, h))
    a, b = blocks[..., 0, :], blocks[..., 1, :]
    x = jnp.stack([a + b, a - b], axis=-2).reshape(batch + (d,))
    h *= 2
  return x / jnp.sqrt(jnp.asarray(d, x.dtype))


def _signs(key: jax.Array, n: int) -> jax.Array:
  return jnp.where(jax.random.bernoulli(key, 0.5, (n,)), 1.0, -1.0).astype(_F32)


def rotate(value: PyTree, key: jax.Array, num_repeats: int) -> PyTree:
  """Each leaf flattened, padded to a power of 2, then ``num_repeats`` times ``x <- H D x``."""
  out = []
  for i, x in enumerate(jax.tree.leaves(value)):
    n = math.prod(x.shape)
    v = jnp.pad(x.astype(_F32).reshape(-1), (0, padded_size(n) - n))
    for r in range(num_repeats):
      v = fast_walsh_hadamard_transform(v * _signs(jax.random.fold_in(key, i * num_repeats + r),
                                                   v.shape[0]))
    out.append(v)
  return jax.tree.unflatten(jax.tree.structure(value), out)


def unrotate(rotated: PyTree, key: jax.Array, num_repeats: int, value_type: PyTree) -> PyTree:
  """The inverse of :func:`rotate`, back to ``value_type``'s shapes and dtypes."""
  out = []
  for i, (v, spec) in enumerate(zip(jax.tree.leaves(rotated), jax.tree.leaves(value_type))):
    v = v.astype(_F32)
    for r in reversed(range(num_repeats)):
      v = fast_walsh_hadamard_transform(v) * _signs(
          jax.random.fold_in(key, i * num_repeats + r), v.shape[0])
    out.append(v[: math.prod(spec.shape)].reshape(spec.shape).astype(spec.dtype))
  return jax.tree.unflatten(jax.tree.structure(value_type), out)


class HadamardTransformFactory:
  """Randomized Walsh-Hadamard rotation of client values around ``inner_agg_factory``.

  Args:
    inner_agg_factory: the aggregation of the rotated values (default ``SumFactory()``); the
      result is weighted when it is (TFF allows only unweighted ones).
    num_repeats: how many sign-flip-and-rotate rounds (a positive int; TFF's default 1).
    seed: the signs' seed (None: a fresh seed from the OS).
  """

  def __init__(self, inner_agg_factory=None, num_repeats: int = 1, *, seed: int | None = None):
    self._inner = SumFactory() if inner_agg_factory is None else inner_agg_factory
    check_inner(self._inner)
    if isinstance(num_repeats, bool) or not isinstance(num_repeats, int) or num_repeats < 1:
      raise ValueError(f'num_repeats should be a positive integer; got {num_repeats!r}.')
    self.num_repeats = num_repeats
    self._key = seed_key(seed)
    self.is_weighted = bool(self._inner.is_weighted)

  def __repr__(self) -> str:
    return f'HadamardTransformFactory({self._inner!r}, num_repeats={self.num_repeats})'

  def create(self, value_type: PyTree) -> AggregationProcess:
    """The process for client values of ``value_type`` (a pytree of numeric types)."""
    value_type = tensor_type(value_type)
    leaves = jax.tree.leaves(value_type)
    if not leaves or not all(jnp.issubdtype(x.dtype, jnp.number) for x in leaves):
      raise TypeError(f'HadamardTransformFactory rotates numeric values; got '
                      f'{format_type(value_type)}.')
    repeats, initial_key = self.num_repeats, self._key
    rotated_type = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((padded_size(math.prod(x.shape)),), _F32), value_type)
    inner = self._inner.create(rotated_type)
    name = 'hadamard_transform'

    def initialize():
      return (inner.initialize(), initial_key)

    form = inner.map_reduce
    if form is not None and inner.initial_client_state is None:
      def prepare(state):
        round_key = jax.random.split(state[1])[1]
        return round_key, form.prepare(state[0])

      def work(prepared, value, weight):
        round_key, inner_prepared = prepared
        return form.work(inner_prepared, rotate(value, round_key, repeats), weight)

      def report(state, summed):
        next_key, round_key = jax.random.split(state[1])
        inner_out = form.report(state[0], summed)
        result = unrotate(inner_out.result, round_key, repeats, value_type)
        return MeasuredProcessOutput((inner_out.state, next_key), result,
                                     {'hd': inner_out.measurements})

      return build_map_reduce_aggregation(initialize, MapReduceForm(prepare, work, report),
                                          value_type, self.is_weighted, name)

    def next_fn(state, value: FederatedValue, weight: FederatedValue | None = None,
                client_states: FederatedValue | None = None):
      _check_clients_value(name, 'the value', value, value_type)
      next_key, round_key = jax.random.split(state[1])
      key_at_server = federated_value(round_key, SERVER)
      rotated = federated_map(lambda v, k: rotate(v, k, repeats),
                              (value, federated_broadcast(key_at_server)))
      inner_out, new_client_states = call_next(inner, state[0], rotated, weight, client_states)
      result = federated_map(lambda y, k: unrotate(y, k, repeats, value_type),
                             (inner_out.result, key_at_server))
      new_state = (inner_out.state, next_key)
      measurements = {'hd': inner_out.measurements}
      if inner.initial_client_state is None:
        return MeasuredProcessOutput(new_state, result, measurements)
      return ClientStatesOutput(new_state, result, measurements, new_client_states)

    return AggregationProcess(initialize, next_fn, value_type, self.is_weighted, None, name,
                              inner.initial_client_state)
