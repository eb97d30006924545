"""The learning process: ``initialize() -> state`` and ``next(state, data) -> (state, metrics)``.

A :class:`LearningProcess` is what ``build_weighted_fed_avg`` and every other algorithm returns,
named and shaped as ``tff.learning.templates.LearningProcess``:

- ``initialize()`` returns a :class:`LearningAlgorithmState` (a pytree):
  ``global_model_weights`` plus one state per part (``distributor``, ``client_work``,
  ``aggregator``, ``finalizer``).
- ``next(state, client_data)`` runs one round and returns ``LearningProcessOutput(state, metrics)``.
  ``client_data`` is a list of the cohort's batched datasets (or an already packed cohort); it is
  packed into ``[clients, steps, batch, ...]`` arrays, checked against the model, and handed to one
  jit-compiled round. ``metrics`` mirrors TFF's layout: ``metrics['client_work']['train']
  ['accuracy']``, ``['distributor']``, ``['aggregator']``, ``['finalizer']``.
- ``get_model_weights(state)`` / ``set_model_weights(state, weights)``.

State is never mutated: ``next`` returns a new state, so keeping an old one is always safe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from fedjax_like.core import cohort
from fedjax_like.data.dataset import BatchedDataset
from fedjax_like.data.packing import PackedCohort, pack_cohort, validate_cohort
from fedjax_like.models.model import Model, ModelWeights

PyTree = Any


class LearningAlgorithmState(NamedTuple):
  """The server state of a learning algorithm, keyed by the four parts as in TFF."""

  global_model_weights: ModelWeights
  distributor: PyTree
  client_work: PyTree
  aggregator: PyTree
  finalizer: PyTree


class LearningProcessOutput(NamedTuple):
  state: LearningAlgorithmState
  metrics: dict


def _cohort_from(client_data, model: Model, num_steps: int | None) -> PackedCohort:
  if isinstance(client_data, PackedCohort):
    packed = client_data
  elif isinstance(client_data, BatchedDataset):
    raise TypeError(
        'next() takes the cohort as a list of client datasets, e.g. next(state, [ds1, ds2]); '
        'got a single dataset. Wrap it in a list.'
    )
  else:
    packed = pack_cohort(list(client_data), num_steps=num_steps)
  return validate_cohort(packed, model)


class LearningProcess:
  """An iterative learning process over federated data.

  Args:
    model: the model being trained (used to check the data at the boundary).
    initialize_fn: ``() -> LearningAlgorithmState``.
    round_fn: ``(state, batches, mask) -> (state, metrics)``, a pure function of arrays; it is
      jit-compiled here, once per cohort shape.
    name: shown in ``repr``.
  """

  def __init__(
      self,
      model: Model,
      initialize_fn: Callable[[], LearningAlgorithmState],
      round_fn: Callable[..., tuple[LearningAlgorithmState, dict]],
      name: str = 'learning_process',
  ):
    self.model = model
    self._initialize_fn = initialize_fn
    self._round_fn = round_fn
    self._compiled = {}  # (execution config, input shapes) -> compiled round
    self.name = name

  def __repr__(self) -> str:
    return f'LearningProcess({self.name})'

  def initialize(self) -> LearningAlgorithmState:
    """The initial server state."""
    return self._initialize_fn()

  def next(
      self, state: LearningAlgorithmState, client_data: Sequence[BatchedDataset] | PackedCohort
  ) -> LearningProcessOutput:
    """Runs one round on the given cohort.

    Args:
      state: the state from ``initialize()`` or a previous ``next``.
      client_data: the cohort: a list of each client's batched dataset (``ds.batch(20)``), or a
        :class:`~fedjax_like.data.packing.PackedCohort`.

    Returns:
      ``LearningProcessOutput(state, metrics)``.
    """
    if not isinstance(state, LearningAlgorithmState):
      raise TypeError(
          f'next() expects the state returned by initialize() or a previous next(); got '
          f'{type(state).__name__}.'
      )
    packed = _cohort_from(client_data, self.model, num_steps=None)
    (batches, mask), state = cohort.place_cohort((packed.batches, packed.mask), state)
    new_state, metrics = self._compiled_round(state, batches, mask)(state, batches, mask)
    return LearningProcessOutput(new_state, metrics)

  def _compiled_round(self, state, batches, mask):
    """The round compiled for these input shapes under the execution config in force.

    Compiled ahead of time once per (config, shapes), so the engine can check that it fits in
    memory before it runs (:func:`fedjax_like.core.cohort.compile_within_memory`). Each config
    gets a fresh trace: the engine reads the config while tracing.
    """
    config = cohort.current_config()
    shapes = jax.tree.map(lambda x: (np.shape(x), np.dtype(x.dtype), getattr(x, 'sharding', None)),
                          (state, batches, mask))
    key = (config, jax.tree.structure(shapes), tuple(jax.tree.leaves(shapes)))
    compiled = self._compiled.get(key)
    if compiled is None:

      def compile_with(cfg):
        with cohort.using(cfg):
          fresh = jax.jit(lambda s, b, m: self._round_fn(s, b, m))
          return fresh.lower(state, batches, mask).compile()

      compiled = cohort.compile_within_memory(compile_with, mask.shape[0], config)
      self._compiled[key] = compiled
    return compiled

  @staticmethod
  def get_model_weights(state: LearningAlgorithmState) -> ModelWeights:
    """The global model's weights held in ``state``."""
    return state.global_model_weights

  @staticmethod
  def set_model_weights(state: LearningAlgorithmState, weights: ModelWeights) -> LearningAlgorithmState:
    """A copy of ``state`` holding ``weights`` as the global model (structure must match)."""
    old, new = jax.tree.structure(state.global_model_weights), jax.tree.structure(weights)
    if old != new:
      raise ValueError(f'set_model_weights: the weights have structure {new}, expected {old}.')
    return state._replace(global_model_weights=weights)
