"""The learning process: ``initialize() -> state`` and ``next(state, data) -> (state, metrics)``.

A :class:`LearningProcess` is what ``build_weighted_fed_avg`` and every other algorithm returns,
named and shaped as ``tff.learning.templates.LearningProcess``. Algorithms build it with
:func:`~fedjax_like.learning.templates.compose_learning_process` from four parts (distributor,
client work, aggregator, finalizer):

- ``initialize()`` returns a :class:`LearningAlgorithmState` (a pytree):
  ``global_model_weights`` plus one state per part (``distributor``, ``client_work``,
  ``aggregator``, ``finalizer``).
- ``next(state, client_data)`` runs one round and returns ``LearningProcessOutput(state, metrics)``.
  ``client_data`` is a list of the cohort's batched datasets (or an already packed cohort); it is
  packed into ``[clients, steps, batch, ...]`` arrays, checked against the model, and handed to one
  jit-compiled round ``round_fn(engine, state, data)``. ``metrics`` is keyed by the parts as TFF's
  is: ``metrics['client_work']['train']['accuracy']``, ``['distributor']``, ``['aggregator']``,
  ``['finalizer']``.
- ``get_model_weights(state)`` / ``set_model_weights(state, weights)``.

Stateful clients (SCAFFOLD's control variates): ``state.client_work`` is a
:class:`~fedjax_like.learning.client_states.StatefulClientWorkState` whose host-side store is keyed
by client id. ``next`` gathers the cohort's entries into ``[clients, ...]`` arrays, calls the jitted
``round_fn(state, batches, mask, client_states) -> (state, metrics, client_states)`` and writes the
results into a new store. Such a cohort must name its clients (``Dataset(..., client_id=...)``, as
``ClientData`` does).

How a round runs is the process's :class:`~fedjax_like.core.engine.Runtime` (given to the builder,
else the one in force when ``next`` is called). ``next`` wraps the cohort as a
:class:`~fedjax_like.data.cohort_source.CohortSource` (checked against the model as it is packed)
and hands it to ``runtime.run_round``, which plans the layout, packs, places, compiles and calls the
round (:mod:`fedjax_like.core.engine.host`). ``process.padding_waste`` is the last round's
masked / computed steps (0 under ``sequential``, which skips padding steps). A client's per-round
key follows its position in the longest-first order, the same under every strategy; its per-step
keys are ``fold_in(key, step)``.

State is never mutated: ``next`` returns a new state, so keeping an old one is always safe.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax

from fedjax_like.core.engine import Runtime, default_runtime
from fedjax_like.data.dataset import BatchedDataset
from fedjax_like.data.packing import PackedCohort, pack_cohort, validate_cohort
from fedjax_like.data.cohort_source import CohortSource
from fedjax_like.learning.client_states import StatefulClientWorkState
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


def packed_cohort(client_data, model: Model | None, num_steps: int | None = None) -> PackedCohort:
  """The cohort as a :class:`PackedCohort`, packed if needed and checked against ``model``."""
  if isinstance(client_data, PackedCohort):
    packed = client_data
  elif isinstance(client_data, BatchedDataset):
    raise TypeError(
        'next() takes the cohort as a list of client datasets, e.g. next(state, [ds1, ds2]); '
        'got a single dataset. Wrap it in a list.'
    )
  else:
    client_data = list(client_data)
    packed = pack_cohort(client_data, num_steps=num_steps)
  return validate_cohort(packed, model) if model is not None else packed


def _check_client_ids(client_data, ids: tuple[str, ...]) -> None:
  """Checks the cohort's ids are real and distinct (stateful clients are keyed by them)."""
  if not isinstance(client_data, (PackedCohort, CohortSource)):
    for i, dataset in enumerate(client_data):
      if getattr(dataset, 'client_id', None) is None:
        raise ValueError(
            f'This algorithm keeps per-client state keyed by client id, but client #{i} of the '
            'cohort has no id. Build datasets with ClientData.create_tf_dataset_for_client(id) '
            "or Dataset(..., client_id='...')."
        )
  for client_id in ids:
    if re.fullmatch(r'#\d+', client_id):
      raise ValueError(
          f'This algorithm keeps per-client state keyed by client id, but the cohort names a '
          f'client {client_id!r} (a position, not an id). Give every dataset a client_id.'
      )
  if len(set(ids)) != len(ids):
    repeated = sorted({c for c in ids if ids.count(c) > 1})
    raise ValueError(f'Client ids must be distinct within a cohort; repeated: {repeated}.')


class _TypedNext:
  """``process.next`` with a ``type_signature``, as TFF's computations have."""

  def __init__(self, fn, process):
    self._fn, self._process = fn, process
    functools.update_wrapper(self, fn.func)

  def __call__(self, *args, **kwargs):
    return self._fn(*args, **kwargs)

  @property
  def type_signature(self):
    return self._process.type_signature


class LearningProcess:
  """An iterative learning process over federated data.

  Args:
    model: the model being trained (used to check the data at the boundary), or None.
    initialize_fn: ``() -> LearningAlgorithmState``.
    round_fn: ``(state, batches, mask) -> (state, metrics)``, a pure function of arrays; with
      ``stateful_parts``, ``(state, batches, mask, *client_states) -> (state, metrics,
      client_states)``. It is jit-compiled here, once per cohort shape.
    name: shown in ``repr``.
    stateful_parts: the parts of the state (``'client_work'``, ``'aggregator'``) that are a
      ``StatefulClientWorkState``, each holding a host-side store of per-client states.
  """

  def __init__(
      self,
      model: Model | None,
      initialize_fn: Callable[[], LearningAlgorithmState],
      round_fn: Callable[..., tuple],
      name: str = 'learning_process',
      *,
      stateful_parts: tuple[str, ...] = (),
      round_computation=None,
      runtime: Runtime | None = None,
      stacked_by: Callable[[], tuple[str, ...]] | tuple[str, ...] = (),
  ):
    self.model = model
    self._initialize_fn = initialize_fn
    self._round_fn = round_fn
    self.runtime = runtime  # None: the runtime in force when `next` is called
    self._stacked_by = stacked_by  # the parts holding every client's value (known once traced)
    self._last_compiled = None  # the last round's compiled program (for memory analysis)
    self._last_layout = None  # the last round's CohortLayout
    self.padding_waste = None  # masked / computed steps in the last round
    self.name = name
    self.stateful_parts = tuple(stateful_parts)
    self.round_computation = round_computation
    # As in TFF, `process.next.type_signature` prints the round's federated type.
    self.next = _TypedNext(functools.partial(LearningProcess.next, self), self)

  def __repr__(self) -> str:
    return f'LearningProcess({self.name})'

  @property
  def type_signature(self):
    """The round's federated type, e.g. ``(<server_state=<...>@SERVER,client_data={<...>}@CLIENTS>
    -> <<...>@SERVER,<...>@SERVER>)``; known once a round has been traced."""
    if self.round_computation is None:
      raise ValueError(f'{self.name} was not built from a federated computation.')
    return self.round_computation.type_signature

  def initialize(self) -> LearningAlgorithmState:
    """The initial server state."""
    return self._initialize_fn()

  def next(
      self, state: LearningAlgorithmState,
      client_data: Sequence[BatchedDataset] | PackedCohort | CohortSource,
  ) -> LearningProcessOutput:
    """Runs one round on the given cohort.

    Args:
      state: the state from ``initialize()`` or a previous ``next``.
      client_data: the cohort: a list of each client's batched dataset (``ds.batch(20)``), a
        :class:`~fedjax_like.data.packing.PackedCohort`, or a
        :class:`~fedjax_like.data.cohort_source.CohortSource` that batches clients on demand.

    Returns:
      ``LearningProcessOutput(state, metrics)``.
    """
    if not isinstance(state, LearningAlgorithmState):
      raise TypeError(
          f'next() expects the state returned by initialize() or a previous next(); got '
          f'{type(state).__name__}.'
      )
    if isinstance(client_data, CohortSource):
      source = client_data  # a cohort batched on demand (e.g. the training loop's RoundCohort)
    else:
      if not isinstance(client_data, (PackedCohort, BatchedDataset)):
        client_data = list(client_data)
        if not client_data or not all(isinstance(d, BatchedDataset) for d in client_data):
          pack_cohort(client_data)  # raises the error that names the client
      source = CohortSource(client_data, self.model)
    runtime = self.runtime or default_runtime()
    if not self.stateful_parts:
      run = runtime.run_round(self._round_fn, self, state, source, stacked_by=self._stacked_by)
      self._record(run)
      new_state, metrics = run.outputs
      return LearningProcessOutput(new_state, metrics)

    _check_client_ids(client_data, source.client_ids)
    parts = self.stateful_parts
    stores = {part: getattr(state, part).clients for part in parts}
    on_device = state._replace(**{
        part: StatefulClientWorkState(getattr(state, part).server, None) for part in parts
    })
    gathered = tuple(stores[part].gather(source.client_ids) for part in parts)
    run = runtime.run_round(self._round_fn, self, on_device, source, gathered,
                            stacked_by=self._stacked_by)
    self._record(run)
    new_state, metrics, *cohort_states = run.outputs
    n = source.num_clients
    ids = tuple(source.client_ids[i] for i in run.order)
    updated = {}
    for part, states in zip(parts, cohort_states):
      states = jax.tree.map(lambda x: x[:n], states)  # drop padding clients
      server = getattr(new_state, part).server
      updated[part] = StatefulClientWorkState(server, stores[part].update(ids, states))
    return LearningProcessOutput(new_state._replace(**updated), metrics)

  @property
  def stateful_clients(self) -> bool:
    """Whether a part of the state keeps per-client states (then cohorts must name clients)."""
    return bool(self.stateful_parts)

  def _record(self, run) -> None:
    """Keeps what the last round ran (its layout, padding waste and compiled program)."""
    self._last_layout, self._last_compiled = run.layout, run.compiled
    self.padding_waste = run.layout.padding_waste

  @staticmethod
  def get_model_weights(state: LearningAlgorithmState) -> ModelWeights:
    """The global model's weights held in ``state``."""
    return state.global_model_weights

  @staticmethod
  def set_model_weights(
      state: LearningAlgorithmState, weights: ModelWeights
  ) -> LearningAlgorithmState:
    """A copy of ``state`` holding ``weights`` as the global model (structure must match)."""
    old, new = jax.tree.structure(state.global_model_weights), jax.tree.structure(weights)
    if old != new:
      raise ValueError(f'set_model_weights: the weights have structure {new}, expected {old}.')
    return state._replace(global_model_weights=weights)
