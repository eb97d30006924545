"""``compose_learning_process``: four parts wired into one jit-compiled learning process.

As ``tff.learning.templates.compose_learning_process``, a round is

    weights@SERVER --distributor--> weights@CLIENTS
      --client_work--> {ClientResult(update, weight)}@CLIENTS
      --aggregator--> update@SERVER --finalizer--> weights'@SERVER

with state ``LearningAlgorithmState(global_model_weights, distributor, client_work, aggregator,
finalizer)`` and metrics ``{'distributor', 'client_work', 'aggregator', 'finalizer'}``, each part's
measurements under its own key.

How the clients run (chosen here, executed by the engine):

- **fused** (the client work and the aggregator both come in map-reduce form, clients stateless):
  ONE ``federated_map`` runs, per client, the client work's ``work`` and then the aggregator's
  ``work`` on its update, and ONE ``federated_sum`` reduces the aggregator's summands together with
  the client work's (metric sums ...). Local training runs once per client and the updates are
  never stacked as ``[clients, params]``: with ``sequential``/``chunked`` execution memory is
  O(chunk), whatever the cohort size.
- **materialized** (stateful clients, whose new states must come back per client anyway, or an
  aggregator that is not a sum, e.g. a median): the client work runs once with its outputs stacked,
  then the aggregator's ``next`` reduces them.
- a client work given only as ``next`` is called as is, then the aggregator's ``next``.

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
    format_type,
    same_type,
    tensor_type,
)
from fedjax_like.core import (
    CLIENTS,
    SERVER,
    FederatedValue,
    federated_broadcast,
    federated_computation,
    federated_map,
    federated_sum,
    federated_value,
)
from fedjax_like.learning.client_states import ClientStates, StatefulClientWorkState
from fedjax_like.learning.process import LearningAlgorithmState, LearningProcess
from fedjax_like.learning.templates.client_works import (
    ClientWorkProcess,
    client_outputs,
    sum_stored,
)
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
  stateful = client_work.initial_client_state is not None
  cw_form, agg_form = client_work.map_reduce, aggregator.map_reduce
  if stateful and cw_form is None:
    raise TypeError(
        f'compose_learning_process: {_part("client_work", client_work)} keeps client state, so it '
        'must come in map-reduce form (build it with templates.build_client_work).'
    )
  fused = cw_form is not None and agg_form is not None and not stateful

  def initialize() -> LearningAlgorithmState:
    client_work_state = client_work.initialize()
    if stateful:
      clients = ClientStates(client_work.initial_client_state)
      client_work_state = StatefulClientWorkState(client_work_state, clients)
    return LearningAlgorithmState(
        global_model_weights=initial_fn(),
        distributor=distributor.initialize(),
        client_work=client_work_state,
        aggregator=aggregator.initialize(),
        finalizer=finalizer.initialize(),
    )

  def aggregate(state, update, weight):
    weight = weight if aggregator.is_weighted else None
    return aggregator.next(state, update, weight)

  def clients_fused(state, weights_at_clients, data):
    prepared, client_inputs = cw_form.prepare(state.client_work, data.num_clients)
    outputs = client_outputs(cw_form, prepared, weights_at_clients, client_inputs, (), data)
    agg_prepared = federated_broadcast(federated_value(agg_form.prepare(state.aggregator), SERVER))

    def per_client(out, agg_prepared):
      weight = out.result.update_weight if aggregator.is_weighted else None
      return agg_form.work(agg_prepared, out.result.update, weight), out.summands

    # One program: the client's loop, then the aggregator's work on its update, summed at once.
    agg_summed, cw_summed = federated_sum(federated_map(per_client, (outputs, agg_prepared))).value
    cw_state, cw_measurements = cw_form.report(state.client_work, cw_summed)
    agg_out = agg_form.report(state.aggregator, agg_summed)
    update = federated_value(agg_out.result, SERVER)
    return cw_state, cw_measurements, agg_out._replace(result=update), None

  def clients_materialized(state, weights_at_clients, data, client_states):
    cw_state = state.client_work.server if stateful else state.client_work
    real = data.mask
    if cw_form is None:
      out = client_work.next(cw_state, weights_at_clients, data)
      results, cw_state, measurements, new_states = out.result, out.state, out.measurements, None
      update, weight = results[0], results[1]
    else:
      prepared, client_inputs = cw_form.prepare(cw_state, data.num_clients)
      outputs = client_outputs(
          cw_form, prepared, weights_at_clients, client_inputs, client_states, data
      ).value
      cw_state, measurements = cw_form.report(cw_state, sum_stored(outputs.summands, real))
      update = FederatedValue(outputs.result.update, CLIENTS, mask=real, engine=data.engine)
      weight = FederatedValue(outputs.result.update_weight, CLIENTS, mask=real, engine=data.engine)
      new_states = outputs.client_state if stateful else None
    if stateful:
      cw_state = StatefulClientWorkState(cw_state, None)
    return cw_state, measurements, aggregate(state.aggregator, update, weight), new_states

  returns = (SERVER, SERVER, CLIENTS) if stateful else (SERVER, SERVER)

  @federated_computation(SERVER, CLIENTS, result=returns, name=name)
  def round_computation(server_state, client_data):
    """One round: distributor -> client work -> aggregator -> finalizer, typed by placement."""
    state = server_state.value
    if stateful:
      cohort_data, client_states = client_data.value
    else:
      cohort_data, client_states = client_data.value, ()
    # The clients' (batches, mask) as the engine steps over them; client_data.mask is False for
    # padding clients (e.g. added to fill a device mesh).
    data = FederatedValue(cohort_data, CLIENTS, mask=client_data.mask, engine=client_data.engine)
    weights_at_server = federated_value(state.global_model_weights, SERVER)
    dist_out = distributor.next(state.distributor, weights_at_server)
    if fused:
      cw_state, cw_measurements, agg_out, new_states = clients_fused(state, dist_out.result, data)
    else:
      cw_state, cw_measurements, agg_out, new_states = clients_materialized(
          state, dist_out.result, data, client_states
      )
    fin_out = finalizer.next(state.finalizer, weights_at_server, agg_out.result)
    new_state = LearningAlgorithmState(
        global_model_weights=fin_out.result.value,
        distributor=dist_out.state,
        client_work=cw_state,
        aggregator=agg_out.state,
        finalizer=fin_out.state,
    )
    metrics = {
        'distributor': dist_out.measurements,
        'client_work': cw_measurements,
        'aggregator': agg_out.measurements,
        'finalizer': fin_out.measurements,
    }
    if stateful:
      return new_state, metrics, FederatedValue(new_states, CLIENTS)
    return new_state, metrics

  def round_fn(engine, state: LearningAlgorithmState, data, *client_states):
    # Clients without a single example are padding (validation rejects empty real clients): they
    # are masked out of every reduction, so padding a cohort to fill devices changes nothing.
    mask = data[1]
    real = jnp.any(mask, axis=tuple(range(1, mask.ndim)))
    client_data = (data, *client_states) if stateful else data
    return round_computation(state, client_data, client_mask=real, engine=engine)

  return LearningProcess(
      client_work.model,
      initialize,
      round_fn,
      name=name,
      stateful_clients=stateful,
      round_computation=round_computation,
      runtime=runtime,
      stacked_by=() if aggregator.map_reduce is not None else (_part('aggregator', aggregator),),
  )
