"""Shared helpers for the aggregator tests: run a process for rounds, strip its map-reduce form."""

import jax
import numpy as np

from fedjax_like.aggregators import AggregationProcess, MeanFactory, tensor_type
from fedjax_like.core import CLIENTS, FederatedValue


def value_type_of(stacked):
  """The per-client value type of stacked ``[clients, ...]`` values."""
  return tensor_type(jax.tree.map(lambda x: x[0], stacked))


def run_rounds(process, values_per_round, weights_per_round=None, state=None, mask=None):
  """Runs ``process.next`` once per round (jitted); returns (results, measurements, state).

  ``values_per_round`` is a list of stacked ``[clients, ...]`` pytrees; results and measurements
  come back as lists of NumPy pytrees.
  """

  @jax.jit
  def step(state, values, weights):
    w = None if weights is None else FederatedValue(weights, CLIENTS, mask=mask)
    out = process.next(state, FederatedValue(values, CLIENTS, mask=mask), w)
    return out.state, out.result.value, out.measurements

  state = process.initialize() if state is None else state
  results, measurements = [], []
  for i, values in enumerate(values_per_round):
    weights = None if weights_per_round is None else weights_per_round[i]
    state, result, measured = step(state, values, weights)
    results.append(jax.tree.map(np.asarray, result))
    measurements.append(jax.tree.map(np.asarray, measured))
  return results, measurements, state


class WithoutMapReduce:
  """A factory whose processes hide their map-reduce form (as a median's would: not a sum)."""

  def __init__(self, factory=None):
    self.factory = MeanFactory() if factory is None else factory
    self.is_weighted = self.factory.is_weighted

  def create(self, value_type):
    p = self.factory.create(value_type)
    return AggregationProcess(p.initialize, p.next, p.value_type, p.is_weighted, None, p.name)
