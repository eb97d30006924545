"""``compose_learning_process``: four parts wired into one jit-compiled learning process.

As ``tff.learning.templates.compose_learning_process``, a round is

    weights@SERVER --distributor--> weights@CLIENTS
      --client_work--> {ClientResult(update, weight)}@CLIENTS
      --aggregator--> update@SERVER --finalizer--> weights'@SERVER

with state ``LearningAlgorithmState(global_model_weights, distributor, client_work, aggregator,
finalizer)`` and metrics ``{'distributor', 'client_work', 'aggregator', 'finalizer'}``, each part's
measurements under its own key.

How the clients run: the composition is TFF's plain chain, each part's ``next`` called in turn,
and the round still runs its clients once. Every part is written with the Federated Core's
intrinsics, whose reductions are lazy (:mod:`fedjax_like.core.passes`): the client work's metric
sums, the aggregator's sums (clipped updates, weights, counts, norm quantiles) and, for stateful
clients, the new client states are all requested before the finalizer reads the aggregate, so
they run in ONE engine pass. Local training runs once per client, the aggregator's per-client
work runs right after it, and the updates are never stacked as ``[clients, params]`` (under
``sequential``/``chunked`` execution memory is O(chunk), whatever the cohort size). An aggregator
that needs every client's value (a median) reads them stacked in that same pass; the memory check
then names it.

Construction checks that the parts fit (weights type from ``initial_model_weights_fn`` through the
distributor, client work and finalizer; the client work's update type against the aggregator's
value type and the finalizer's update type) and raises a ``TypeError`` naming both parts and both
types.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from fedjax_like.aggregators.factory import (
    AggregationProcess,
    call_next,
    format_type,
    same_type,
    tensor_type,
)
from fedjax_like.core import (
    CLIENTS,
    SERVER,
    FederatedValue,
    federated_computation,
    federated_value,
)
from fedjax_like.core.engine import CohortData
from fedjax_like.core.values import resolve
from fedjax_like.learning.client_states import ClientStates, StatefulClientWorkState
from fedjax_like.learning.process import LearningAlgorithmState, LearningProcess
from fedjax_like.learning.templates.client_works import ClientWorkProcess
from fedjax_like.learning.templates.distributors import DistributionProcess
from fedjax_like.learning.templates.finalizers import FinalizerProcess
from fedjax_like.models.model import ModelWeights

PyTree = Any


def _part(kind: str, process) -> str:
  return f'the {kind} {getattr(process, "name", type(process).__name__)!r}'


def _check_type(what_a: str, type_a: PyTree, what_b: str, type_b: PyTree, hint: str = '') -> None:
  if not same_type(type_a, type_b):
    raise TypeError(
        f'compose_learning_process: {what_a} has type\n  {format_type(type_a)}\nbut {what_b} has '
        f'type\n  {format_type(type_b)}.{hint}'
    )


def _check_instance(kind: str, value, cls, hint: str) -> None:
  if not isinstance(value, cls):
    raise TypeError(
        f'compose_learning_process: the {kind} must be a {cls.__name__}; got '
        f'{type(value).__name__}. {hint}'
    )


def _initial_weights(initial_model_weights_fn) -> Callable[[], ModelWeights]:
  if callable(initial_model_weights_fn):
    return initial_model_weights_fn
  weights = initial_model_weights_fn
  return lambda: weights


def _validate(weights_type, distributor, client_work, aggregator, finalizer) -> None:
  _check_instance('distributor', distributor, DistributionProcess, 'See templates.distributors.')
  _check_instance('client_work', client_work, ClientWorkProcess, 'See templates.client_works.')
  _check_instance(
      'aggregator', aggregator, AggregationProcess,
      'Pass an aggregation factory (e.g. aggregators.MeanFactory()) or a process it created.',
  )
  _check_instance('finalizer', finalizer, FinalizerProcess, 'See templates.finalizers.')
  _check_type(
      'the initial model weights', weights_type,
      f'the weights {_part("distributor", distributor)} sends', distributor.weights_type,
  )
  _check_type(
      f'the weights {_part("distributor", distributor)} sends', distributor.weights_type,
      f'the weights {_part("client_work", client_work)} trains', client_work.weights_type,
  )
  _check_type(
      f'the update {_part("client_work", client_work)} produces', client_work.update_type,
      f'the value {_part("aggregator", aggregator)} aggregates', aggregator.value_type,
      '\nCreate the aggregator for the client work\'s update type, or pass the factory (e.g. '
      'MeanFactory()) and let compose_learning_process create it.',
  )
  _check_type(
      f'the result of {_part("aggregator", aggregator)}', aggregator.value_type,
      f'the update {_part("finalizer", finalizer)} applies', finalizer.update_type,
  )
  _check_type(
      'the initial model weights', weights_type,
      f'the weights {_part("finalizer", finalizer)} updates', finalizer.weights_type,
  )


def compose_learning_process(
    initial_model_weights_fn: Callable[[], ModelWeights] | ModelWeights,
    model_weights_distributor: DistributionProcess,
    client_work: ClientWorkProcess,
    model_update_aggregator,
    model_finalizer: FinalizerProcess,
    *,
    name: str = 'composed_learning_process',
    runtime=None,
) -> LearningProcess:
  """Composes the four parts into a :class:`~fedjax_like.learning.process.LearningProcess`.

  Args:
    initial_model_weights_fn: ``() -> ModelWeights`` (or the weights themselves).
    model_weights_distributor: a :class:`DistributionProcess`.
    client_work: a :class:`ClientWorkProcess`.
    model_update_aggregator: an :class:`~fedjax_like.aggregators.AggregationProcess`, or a factory
      (``aggregators.MeanFactory()``), created here for the client work's update type.
    model_finalizer: a :class:`FinalizerProcess`.
    name: the process's name.
    runtime: the :class:`~fedjax_like.core.engine.Runtime` that runs its rounds (default: the
      runtime in force when ``next`` is called).

  Raises:
    TypeError: when the parts do not fit, naming both parts and both types.
  """
  initial_fn = _initial_weights(initial_model_weights_fn)
  weights_type = tensor_type(jax.eval_shape(initial_fn))
  aggregator = model_update_aggregator
  if not isinstance(aggregator, AggregationProcess) and hasattr(aggregator, 'create'):
    if isinstance(client_work, ClientWorkProcess):
      aggregator = aggregator.create(client_work.update_type)
  _validate(weights_type, model_weights_distributor, client_work, aggregator, model_finalizer)
  distributor, finalizer = model_weights_distributor, model_finalizer
  # The parts that keep a state on each client (SCAFFOLD's control variates, top-k's residuals):
  # their states live on the host, in a ClientStates store inside their part of the state.
  initial_client_states = {
      part: process.initial_client_state
      for part, process in (('client_work', client_work), ('aggregator', aggregator))
      if process.initial_client_state is not None
  }
  stateful = tuple(initial_client_states)
  aggregator_name = _part('aggregator', aggregator)

  def initialize() -> LearningAlgorithmState:
    parts = {'client_work': client_work.initialize(), 'aggregator': aggregator.initialize()}
    for part, initial in initial_client_states.items():
      parts[part] = StatefulClientWorkState(parts[part], ClientStates(initial))
    return LearningAlgorithmState(
        global_model_weights=initial_fn(),
        distributor=distributor.initialize(),
        finalizer=finalizer.initialize(),
        **parts,
    )

  returns = (SERVER, SERVER) + (CLIENTS,) * len(stateful)

  @federated_computation(SERVER, CLIENTS, result=returns, name=name)
  def round_computation(server_state, client_data):
    """One round: distributor -> client work -> aggregator -> finalizer, typed by placement.

    TFF's plain chain. The parts' reductions are lazy, so the client work's measurements, the
    aggregator's sums (and the new client states) all come out of one engine pass, run when the
    finalizer reads the aggregate: local training runs once per client with the aggregator's
    per-client work right after it.
    """
    state = server_state.value
    cohort_data, *stored = client_data.value if stateful else (client_data.value,)
    at_clients = lambda x: FederatedValue(  # noqa: E731
        x, CLIENTS, mask=client_data.mask, engine=client_data.engine, scope=client_data.scope)
    client_states = {part: at_clients(s) for part, s in zip(stateful, stored)}
    server_of = lambda part: getattr(state, part).server if part in client_states else getattr(  # noqa: E731
        state, part)
    # The clients' (batches, mask) as the engine steps over them; client_data.mask is False for
    # padding clients (e.g. added to fill a device mesh).
    data = at_clients(cohort_data)
    weights_at_server = federated_value(state.global_model_weights, SERVER)
    dist_out = distributor.next(state.distributor, weights_at_server)
    new_client_states = {}
    if 'client_work' in client_states:
      cw_out = client_work.next(server_of('client_work'), dist_out.result, data,
                                client_states['client_work'])
      new_client_states['client_work'] = cw_out.client_states.prefetch()  # in the one pass
    else:
      cw_out = client_work.next(server_of('client_work'), dist_out.result, data)
    update, weight = cw_out.result[0], cw_out.result[1]
    with data.scope.labeled(aggregator_name):
      agg_out, agg_states = call_next(aggregator, server_of('aggregator'), update, weight,
                                      client_states.get('aggregator'))
    if agg_states is not None:
      new_client_states['aggregator'] = agg_states.prefetch()
    fin_out = finalizer.next(state.finalizer, weights_at_server, agg_out.result)
    parts = {'client_work': cw_out.state, 'aggregator': agg_out.state}
    for part in stateful:
      parts[part] = StatefulClientWorkState(resolve(parts[part]), None)
    new_state = resolve(LearningAlgorithmState(
        global_model_weights=fin_out.result,
        distributor=dist_out.state,
        finalizer=fin_out.state,
        **parts,
    ))
    metrics = resolve({
        'distributor': dist_out.measurements,
        'client_work': cw_out.measurements,
        'aggregator': agg_out.measurements,
        'finalizer': fin_out.measurements,
    })
    return (new_state, metrics, *(new_client_states[part] for part in stateful))

  def round_fn(engine, state: LearningAlgorithmState, data, *client_states):
    # Clients without a single example are padding (validation rejects empty real clients): they
    # are masked out of every reduction, so padding a cohort to fill devices changes nothing.
    if isinstance(data, CohortData):
      real = data.client_mask
    else:
      mask = data[1]
      real = jnp.any(mask, axis=tuple(range(1, mask.ndim)))
    client_data = (data, *client_states) if stateful else data
    return round_computation(state, client_data, client_mask=real, engine=engine)

  return LearningProcess(
      client_work.model,
      initialize,
      round_fn,
      name=name,
      stateful_parts=stateful,
      round_computation=round_computation,
      runtime=runtime,
      stacked_by=lambda: round_computation.last_scope.stacked_by,
  )
