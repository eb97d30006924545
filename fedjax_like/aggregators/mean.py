"""The mean: weighted (``MeanFactory``) and unweighted (``UnweightedMeanFactory``), as in TFF.

    result = sum_i w_i x_i / sum_i w_i        (w_i = 1 for the unweighted mean)

A client whose value (or weight) is not finite gets weight 0, as TFF's client work does, and is
counted in ``measurements['num_clients_non_finite']``; ``measurements['mean_weight']`` is
``sum_i w_i``. A cohort whose weights are all 0 has mean 0.

Both are sums of per-client terms, so they come in map-reduce form: inside a learning process the
per-client term ``(w_i x_i, w_i)`` is computed right after the client's own work and the cohort is
reduced by one ``federated_sum`` (no ``[clients, params]`` stack).

**Inner sums** (TFF's ``MeanFactory(value_sum_factory, weight_sum_factory)`` and
``UnweightedMeanFactory(value_sum_factory, count_sum_factory)``): given, the sums of ``w_i x_i``
and of ``w_i`` (or of the int32 count) are delegated to those factories (e.g. ``SecureSumFactory``,
as ``secure_aggregator`` does, or a quantizer, as ``compression_aggregator``). When both come in
map-reduce form so does the mean; otherwise ``next`` is the intrinsics chain (per-client terms by
``federated_map``, each sum's own ``next``, the division by ``federated_map`` at SERVER). The
state is then ``{value_sum_process, weight_sum_process}`` and the measurements TFF's
``{mean_value: <value sum's>, mean_weight (or mean_count): <weight sum's>}`` plus
``num_clients_non_finite``.
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
    _check_weight,
    build_map_reduce_aggregation,
    ready,
    tensor_type,
)
from fedjax_like.aggregators.sum_factory import SumFactory
from fedjax_like.core import FederatedValue, federated_map, federated_sum, tree

PyTree = Any


def _mean_form() -> MapReduceForm:
  def prepare(state):
    del state
    return ()

  def work(prepared, value, weight):
    del prepared
    w = jnp.ones((), jnp.float32) if weight is None else jnp.asarray(weight, jnp.float32)
    finite = tree.all_finite(value) & jnp.isfinite(w)
    w = jnp.where(finite, w, 0.0)
    clean = tree.where(finite, value, tree.zeros_like(value))
    return tree.scale(clean, w), w, (~finite).astype(jnp.float32)

  def report(state, summed):
    weighted_total, total_weight, non_finite = summed
    mean = tree.divide_by_total(weighted_total, total_weight)
    measurements = {
        'mean_weight': total_weight,
        'num_clients_non_finite': non_finite.astype(jnp.int32),
    }
    return MeasuredProcessOutput(state, mean, measurements)

  return MapReduceForm(prepare, work, report)


def _check_sum_factory(factory, what: str) -> None:
  if factory is None:
    return
  if not hasattr(factory, 'create') or getattr(factory, 'is_weighted', True):
    raise TypeError(
        f'{what} must be an unweighted aggregation factory such as SumFactory() or '
        f'SecureSumFactory(...); got {factory!r}.'
    )


def _inner_sum_mean(value_type, value_sum_factory, weight_sum_factory, weighted: bool, name: str):
  """The mean with its two sums delegated to inner factories (TFF's composition)."""
  value_sum = (value_sum_factory or SumFactory()).create(value_type)
  weight_type = jax.ShapeDtypeStruct((), jnp.float32 if weighted else jnp.int32)
  weight_sum = (weight_sum_factory or SumFactory()).create(weight_type)
  v_form, w_form = value_sum.map_reduce, weight_sum.map_reduce
  for what, process in (('value', value_sum), ('weight', weight_sum)):
    if process.initial_client_state is not None:
      raise TypeError(f'{name}: the {what} sum {process.name!r} keeps client state; wrap the '
                      'mean in it instead (e.g. TopKSparsificationFactory(MeanFactory())).')
  weight_key = 'mean_weight' if weighted else 'mean_count'

  def initialize():
    return {'value_sum_process': value_sum.initialize(),
            'weight_sum_process': weight_sum.initialize()}

  def terms(value, weight):
    w = jnp.ones((), jnp.float32) if weight is None else jnp.asarray(weight, jnp.float32)
    finite = tree.all_finite(value) & jnp.isfinite(w)
    w = jnp.where(finite, w, 0.0)
    clean = tree.where(finite, value, tree.zeros_like(value))
    count = w if weighted else finite.astype(jnp.int32)
    return tree.scale(clean, w), count, (~finite).astype(jnp.float32)

  def measure(v_measurements, w_measurements, non_finite):
    return {'mean_value': v_measurements, weight_key: w_measurements,
            'num_clients_non_finite': non_finite.astype(jnp.int32)}

  if v_form is None or w_form is None:
    # A sum that is not a map-reduce form (e.g. a quantizer drawing per-client keys): the mean
    # is the intrinsics chain, each sum by its own ``next``, the division a server-side map.
    def next_fn(state, value: FederatedValue, weight: FederatedValue | None = None):
      _check_clients_value(name, 'the value', value, value_type)
      if weighted:
        _check_weight(name, weight)
        per_client = federated_map(terms, (value, weight))
      else:
        per_client = federated_map(lambda v: terms(v, None), value)
      v_out = value_sum.next(state['value_sum_process'], per_client[0])
      w_out = weight_sum.next(state['weight_sum_process'], per_client[1])
      non_finite = federated_map(lambda c: c.astype(jnp.int32), federated_sum(per_client[2]))
      mean = federated_map(
          lambda total, count: tree.divide_by_total(total, jnp.asarray(count, jnp.float32)),
          (v_out.result, w_out.result))
      new_state = {'value_sum_process': v_out.state, 'weight_sum_process': w_out.state}
      measured = {'mean_value': v_out.measurements, weight_key: w_out.measurements,
                  'num_clients_non_finite': ready(non_finite)}
      return MeasuredProcessOutput(new_state, mean, measured)

    return AggregationProcess(initialize, next_fn, value_type, weighted, None, name)

  def prepare(state):
    return (v_form.prepare(state['value_sum_process']),
            w_form.prepare(state['weight_sum_process']))

  def work(prepared, value, weight):
    scaled, count, non_finite = terms(value, weight)
    return (v_form.work(prepared[0], scaled, None), w_form.work(prepared[1], count, None),
            non_finite)

  def report(state, summed):
    value_summed, weight_summed, non_finite = summed
    v_out = v_form.report(state['value_sum_process'], value_summed)
    w_out = w_form.report(state['weight_sum_process'], weight_summed)
    mean = tree.divide_by_total(v_out.result, jnp.asarray(w_out.result, jnp.float32))
    new_state = {'value_sum_process': v_out.state, 'weight_sum_process': w_out.state}
    return MeasuredProcessOutput(new_state, mean,
                                 measure(v_out.measurements, w_out.measurements, non_finite))

  form = MapReduceForm(prepare, work, report)
  return build_map_reduce_aggregation(initialize, form, value_type, weighted, name)


class MeanFactory:
  """The weighted mean ``sum_i w_i x_i / sum_i w_i`` (``tff.aggregators.MeanFactory``).

  Args:
    value_sum_factory: optional unweighted factory summing ``w_i x_i`` (default: the plain sum).
    weight_sum_factory: optional unweighted factory summing the float32 ``w_i``.
  """

  is_weighted = True

  def __init__(self, value_sum_factory=None, weight_sum_factory=None):
    _check_sum_factory(value_sum_factory, 'value_sum_factory')
    _check_sum_factory(weight_sum_factory, 'weight_sum_factory')
    self._value_sum, self._weight_sum = value_sum_factory, weight_sum_factory

  def create(self, value_type: PyTree) -> AggregationProcess:
    """The mean over values of ``value_type`` (a pytree of ``jax.ShapeDtypeStruct`` or arrays)."""
    if self._value_sum is None and self._weight_sum is None:
      return build_map_reduce_aggregation(lambda: (), _mean_form(), value_type, True, 'mean')
    return _inner_sum_mean(tensor_type(value_type), self._value_sum, self._weight_sum, True,
                           'mean')

  def __repr__(self) -> str:
    if self._value_sum is None and self._weight_sum is None:
      return 'MeanFactory()'
    return f'MeanFactory({self._value_sum!r}, {self._weight_sum!r})'


class UnweightedMeanFactory:
  """The plain mean ``(1/n) sum_i x_i`` (``tff.aggregators.UnweightedMeanFactory``).

  Args:
    value_sum_factory: optional unweighted factory summing the ``x_i`` (default: the plain sum).
    count_sum_factory: optional unweighted factory summing the int32 ones that count the clients.
  """

  is_weighted = False

  def __init__(self, value_sum_factory=None, count_sum_factory=None):
    _check_sum_factory(value_sum_factory, 'value_sum_factory')
    _check_sum_factory(count_sum_factory, 'count_sum_factory')
    self._value_sum, self._count_sum = value_sum_factory, count_sum_factory

  def create(self, value_type: PyTree) -> AggregationProcess:
    """The unweighted mean over values of ``value_type``."""
    if self._value_sum is None and self._count_sum is None:
      return build_map_reduce_aggregation(
          lambda: (), _mean_form(), value_type, False, 'unweighted_mean'
      )
    return _inner_sum_mean(tensor_type(value_type), self._value_sum, self._count_sum, False,
                           'unweighted_mean')

  def __repr__(self) -> str:
    if self._value_sum is None and self._count_sum is None:
      return 'UnweightedMeanFactory()'
    return f'UnweightedMeanFactory({self._value_sum!r}, {self._count_sum!r})'
