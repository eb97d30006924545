"""Client work: what each client does with the broadcast model and its own data.

A :class:`ClientWorkProcess` is a pure ``(initialize, next)`` pair, as
``tff.learning.templates.ClientWorkProcess``:

    initialize() -> state
    next(state, weights@CLIENTS, data@CLIENTS[, client_states@CLIENTS])
        -> ClientWorkOutput(state, result={ClientResult(update, update_weight)}@CLIENTS,
                            measurements, client_states)

``update`` is the client's contribution to the model (for model-delta work the pseudo-gradient
``w - w_i``: broadcast minus trained weights, as in TFF) and ``update_weight`` its weight in the
server's average. ``measurements`` is server-side, ``{'train': {accuracy, loss, num_examples,
num_batches}}`` for training work.

**Map-reduce form** (``ClientWorkProcess.map_reduce``), which ``next`` is derived from and which
:func:`~fedjax_like.learning.templates.compose_learning_process` fuses with the aggregator so that a
round is one ``federated_map`` and one ``federated_sum`` (local training runs once per client, and
updates are never stacked as ``[clients, params]``):

    prepare(state, num_clients)   -> (prepared, client_inputs)        server; client_inputs [n, ...]
    loop: a ClientLoop over ONE client's steps                        the engine runs it
      init((prepared, weights), (client_input, client_state)) -> carry
      step(carry, batch, mask) -> carry                               each real step
      finish((prepared, weights), carry) -> ClientOutput
    report(state, summed)         -> (state, measurements)            server; sum of summands

The client's loop over its data is the engine's (:class:`~fedjax_like.core.engine.ClientLoop`):
the client work says what one step does, never how steps or clients are iterated.

``ClientOutput(result, summands, client_state)``: ``summands`` are summed over the cohort (metric
sums, SCAFFOLD's control-variate deltas, MimeLite's gradients) and handed to ``report``;
``client_state`` is the client's new state for stateful work (``()`` otherwise), written back to the
host-side :class:`~fedjax_like.learning.client_states.ClientStates` by the learning process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fedjax_like.aggregators.factory import tensor_type
from fedjax_like.core import (
    CLIENTS,
    SERVER,
    FederatedValue,
    federated_broadcast,
    federated_map,
    federated_sum,
    federated_value,
)
from fedjax_like.core.engine import ClientLoop, Program, output_type
from fedjax_like.core.values import unpack
from fedjax_like.models.model import Model

PyTree = Any


class ClientResult(NamedTuple):
  """What one client sends to the aggregator (``tff.learning.templates.ClientResult``)."""

  update: PyTree
  update_weight: jax.Array


class ClientOutput(NamedTuple):
  """One client's output in map-reduce form (see the module docstring)."""

  result: ClientResult
  summands: PyTree
  client_state: PyTree = ()


class ClientWorkOutput(NamedTuple):
  """``ClientWorkProcess.next``'s output: a ``MeasuredProcessOutput`` plus new client states."""

  state: PyTree
  result: FederatedValue
  measurements: Any
  client_states: FederatedValue | None = None


class ClientWorkMapReduce(NamedTuple):
  """The map-reduce form of a client work (see the module docstring)."""

  prepare: Callable[[PyTree, int], tuple[PyTree, PyTree]]
  loop: ClientLoop
  report: Callable[[PyTree, PyTree], tuple[PyTree, Any]]


class ClientWorkProcess(NamedTuple):
  """Client work as a pure ``(initialize, next)`` pair, with its types and map-reduce form.

  Attributes:
    initialize: ``() -> state``.
    next: see the module docstring.
    weights_type: the model weights it takes (pytree of ``jax.ShapeDtypeStruct``).
    update_type: the type of ``ClientResult.update`` it produces.
    map_reduce: the :class:`ClientWorkMapReduce`, or None for a work given only as ``next``.
    model: the model (used by the learning process to check data at the boundary), or None.
    initial_client_state: the state of an unseen client for stateful work, else None.
    name: names the part in errors.
  """

  initialize: Callable[[], PyTree]
  next: Callable[..., ClientWorkOutput]
  weights_type: PyTree
  update_type: PyTree
  map_reduce: ClientWorkMapReduce | None = None
  model: Model | None = None
  initial_client_state: PyTree | None = None
  name: str = 'client_work'


def sum_stored(stacked: PyTree, client_mask: jax.Array | None = None) -> PyTree:
  """The sum over the real clients of per-client values ``[clients, ...]`` (``()`` stays)."""
  if not jax.tree.leaves(stacked):
    return stacked
  return federated_sum(FederatedValue(stacked, CLIENTS, mask=client_mask)).value


def client_data_type(model: Model, num_steps: int = 1, batch_size: int = 1) -> tuple[PyTree, Any]:
  """The abstract ``(batches, mask)`` of one client for ``model`` (for shape inference)."""
  x_spec, y_spec = model.input_spec
  lead = (num_steps, batch_size)
  batches = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(lead + tuple(s.shape), s.dtype), (x_spec, y_spec)
  )
  return batches, jax.ShapeDtypeStruct(lead, jnp.bool_)


def client_outputs(
    form: ClientWorkMapReduce, prepared, weights: FederatedValue, client_inputs, client_states,
    data: FederatedValue,
) -> FederatedValue:
  """``{ClientOutput}@CLIENTS`` of the work's loop over the cohort (deferred: one program)."""
  shared = federated_map(lambda p, w: (p, w), (
      federated_broadcast(federated_value(prepared, SERVER)), weights,
  ))
  per_client = FederatedValue((client_inputs, client_states), CLIENTS, engine=data.engine,
                              scope=data.scope)
  return federated_map(form.loop, (shared, per_client, data))


def build_client_work(
    model: Model,
    initialize: Callable[[], PyTree],
    prepare: Callable[[PyTree, int], tuple[PyTree, PyTree]],
    loop: ClientLoop,
    report: Callable[[PyTree, PyTree], tuple[PyTree, Any]],
    *,
    initial_client_state: PyTree | None = None,
    name: str = 'client_work',
) -> ClientWorkProcess:
  """A :class:`ClientWorkProcess` from its map-reduce form; types are inferred by tracing.

  Args:
    model: the model trained (its ``init_fn`` gives the weights type).
    initialize: ``() -> state``.
    prepare: ``(state, num_clients) -> (prepared, client_inputs)``; ``client_inputs`` is a pytree
      of ``[num_clients, ...]`` arrays (e.g. per-client keys) or ``()``.
    loop: the :class:`~fedjax_like.core.engine.ClientLoop` of one client (see the module
      docstring); ``finish`` returns a :class:`ClientOutput`.
    report: ``(state, summed summands) -> (state, measurements)``.
    initial_client_state: for stateful work, the state of a client never seen (a pytree of arrays).
    name: names the part in errors.
  """
  if not isinstance(loop, ClientLoop):
    raise TypeError(
        f'Client work {name!r}: loop must be a ClientLoop(init, step, finish); got '
        f'{type(loop).__name__}.'
    )
  form = ClientWorkMapReduce(prepare, loop, report)
  weights_type = tensor_type(jax.eval_shape(model.init_fn, jax.random.key(0)))
  state_type = jax.eval_shape(initialize)
  prepared_type, inputs_type = jax.eval_shape(lambda s: prepare(s, 1), state_type)
  client_state_type = () if initial_client_state is None else tensor_type(initial_client_state)
  as_one = lambda t: jax.tree.map(lambda s: jax.ShapeDtypeStruct((1,) + s.shape, s.dtype), t)  # noqa: E731
  batches, mask = client_data_type(model)
  probe = Program.of_loop(
      loop, (prepared_type, weights_type), None, as_one((
          jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), inputs_type),
          client_state_type,
      )), 0, as_one((batches, mask)),
  )
  out_type = output_type(probe)
  if not isinstance(out_type, ClientOutput):
    raise TypeError(
        f'Client work {name!r}: loop.finish must return a ClientOutput; got {out_type!r}.'
    )
  update_type = tensor_type(out_type.result.update)
  stateful = initial_client_state is not None

  def next_fn(state, weights: FederatedValue, data: FederatedValue, client_states=None):
    """One round of the work over the cohort, written with the intrinsics: the clients' outputs
    stay deferred (the aggregator's per-client work is fused after the loop) and the summed
    measurements are lazy, so the round runs in one engine pass."""
    num_clients = data.num_clients
    prepared, client_inputs = prepare(state, num_clients)
    if stateful and client_states is None:
      raise TypeError(f'Client work {name!r} is stateful: next(...) needs client_states@CLIENTS.')
    states = client_states.value if stateful else ()
    outputs = client_outputs(form, prepared, weights, client_inputs, states, data)
    summed = federated_sum(federated_map(lambda out: out.summands, outputs))
    new_state, measurements = unpack(
        federated_map(lambda sums: tuple(report(state, sums)), summed), 2
    )
    new_states = federated_map(lambda out: out.client_state, outputs) if stateful else None
    result = federated_map(lambda out: out.result, outputs)
    return ClientWorkOutput(new_state, result, measurements, new_states)

  return ClientWorkProcess(
      initialize=initialize,
      next=next_fn,
      weights_type=weights_type,
      update_type=update_type,
      map_reduce=form,
      model=model,
      initial_client_state=initial_client_state,
      name=name,
  )
