"""The sum (``tff.aggregators.SumFactory``): ``result = sum_i x_i``, no state, no measurements.

Unweighted. It is the count aggregator of clipping and zeroing (``clipped_count``,
``zeroed_count``) and the record sum of differential privacy; in map-reduce form its client work is
the identity, so an outer aggregator folds it into the round's one ``federated_sum``.

Unlike the mean, the sum does not drop non-finite values: a NaN client makes the sum NaN (as in
TFF). Wrap it in ``zeroing_factory`` or ``clipping_factory`` to zero such clients first.
"""

from __future__ import annotations

from typing import Any

from fedjax_like.aggregators.factory import (
    AggregationProcess,
    MapReduceForm,
    MeasuredProcessOutput,
    build_map_reduce_aggregation,
)

PyTree = Any


def sum_form() -> MapReduceForm:
  """The sum's map-reduce form: ``prepare -> ()``, ``work -> value``, ``report -> (sum, ())``."""

  def prepare(state):
    del state
    return ()

  def work(prepared, value, weight):
    del prepared, weight
    return value

  def report(state, summed):
    return MeasuredProcessOutput(state, summed, ())

  return MapReduceForm(prepare, work, report)


class SumFactory:
  """The sum over clients of values of any numeric type (``tff.aggregators.SumFactory``)."""

  is_weighted = False

  def create(self, value_type: PyTree) -> AggregationProcess:
    """The sum over values of ``value_type`` (a pytree of ``jax.ShapeDtypeStruct`` or arrays)."""
    return build_map_reduce_aggregation(lambda: (), sum_form(), value_type, False, 'sum')

  def __repr__(self) -> str:
    return 'SumFactory()'
