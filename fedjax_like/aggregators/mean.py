"""The mean: weighted (``MeanFactory``) and unweighted (``UnweightedMeanFactory``), as in TFF.

    result = sum_i w_i x_i / sum_i w_i        (w_i = 1 for the unweighted mean)

A client whose value (or weight) is not finite gets weight 0, as TFF's client work does, and is
counted in ``measurements['num_clients_non_finite']``; ``measurements['mean_weight']`` is
``sum_i w_i``. A cohort whose weights are all 0 has mean 0.

Both are sums of per-client terms, so they come in map-reduce form: inside a learning process the
per-client term ``(w_i x_i, w_i)`` is computed right after the client's own work and the cohort is
reduced by one ``federated_sum`` (no ``[clients, params]`` stack).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from fedjax_like.aggregators.factory import (
    AggregationProcess,
    MapReduceForm,
    MeasuredProcessOutput,
    build_map_reduce_aggregation,
)
from fedjax_like.core import tree

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


class MeanFactory:
  """The weighted mean ``sum_i w_i x_i / sum_i w_i`` (``tff.aggregators.MeanFactory``)."""

  is_weighted = True

  def create(self, value_type: PyTree) -> AggregationProcess:
    """The mean over values of ``value_type`` (a pytree of ``jax.ShapeDtypeStruct`` or arrays)."""
    return build_map_reduce_aggregation(lambda: (), _mean_form(), value_type, True, 'mean')

  def __repr__(self) -> str:
    return 'MeanFactory()'


class UnweightedMeanFactory:
  """The plain mean ``(1/n) sum_i x_i`` (``tff.aggregators.UnweightedMeanFactory``)."""

  is_weighted = False

  def create(self, value_type: PyTree) -> AggregationProcess:
    """The unweighted mean over values of ``value_type``."""
    return build_map_reduce_aggregation(
        lambda: (), _mean_form(), value_type, False, 'unweighted_mean'
    )

  def __repr__(self) -> str:
    return 'UnweightedMeanFactory()'
