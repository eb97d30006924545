"""Aggregation processes and the factories that build them, shaped as ``tff.aggregators``.

An :class:`AggregationProcess` is a pure ``(initialize, next)`` pair over pytrees:

    initialize() -> state
    next(state, value@CLIENTS, weight@CLIENTS | None)
        -> MeasuredProcessOutput(state, result@SERVER, measurements)

A factory makes one for a given value type, ``factory.create(value_type)`` (``value_type`` is a
pytree of ``jax.ShapeDtypeStruct``), and says with ``is_weighted`` whether ``next`` takes weights.
Learning algorithms take a factory, so the same DP, clipping or robust aggregator plugs into any of
them and is created for the model's update type when the process is composed.

``next`` is written with the Federated Core's intrinsics. Reductions are lazy (see
:mod:`fedjax_like.core.passes`): inside a learning process, the aggregator's ``federated_sum``
calls and the client work's join one engine pass, so the aggregator's per-client work runs right
after each client's training and the cohort's updates are never stacked as ``[clients, params]``.
Server-side work on a sum is ``federated_map(fn, sum@SERVER)``, which stays lazy; ``state``,
``result`` and ``measurements`` may be such SERVER values (the learning process reads them at
the end of the round). An aggregator that is not a sum (a median, Krum) reads the client values
(``value.value``, stacked ``[clients, ...]``); that joins the same pass, and the memory check
names the aggregator when it does not fit.

**Map-reduce form**, a convenience for the common shape, a *sum* of per-client terms followed by
server work:

    prepare(state)                  -> b               (server; sent to every client: a clip norm)
    work(b, value_i, weight_i)      -> summand_i       (one client; e.g. (w_i * clip(x_i), w_i))
    report(state, sum_i summand_i)  -> MeasuredProcessOutput(state, result, measurements)   (server)

:func:`build_map_reduce_aggregation` derives ``next`` from the form with the intrinsics above
(broadcast ``prepare``, map ``work``, one ``federated_sum``, ``report`` at the server), and keeps
the form as ``AggregationProcess.map_reduce`` so outer aggregators can compose inner ones form by
form (clipping around a mean, a mean over secure sums).

**Client state.** Some aggregations keep a state on each client between the rounds it takes part
in (top-k sparsification's error-feedback residual). Such a process sets
``initial_client_state`` to the state of a client never seen (ONE client's pytree of arrays, e.g.
zeros like the value) and its ``next`` takes the cohort's states and returns the new ones:

    next(state, value@CLIENTS, weight@CLIENTS | None, client_states@CLIENTS)
        -> ClientStatesOutput(state, result@SERVER, measurements, new_client_states@CLIENTS)

``client_states`` is a per-client value ``[clients, ...]`` in the cohort's order (the caller
gathers it, e.g. from a host-side ``ClientStates`` store keyed by client id, and writes the new
states of the REAL clients back: the rows of padding clients are meaningless). A process without
client state has ``initial_client_state = None`` and returns a plain :class:`MeasuredProcessOutput`.
An outer wrapper around a process with client state keeps it (same ``initial_client_state``) and
passes the states through (:func:`call_next` does both cases).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax

from fedjax_like.core import (
    CLIENTS,
    SERVER,
    FederatedValue,
    federated_broadcast,
    federated_map,
    federated_sum,
    federated_value,
)
from fedjax_like.core.placements import format_member_type
from fedjax_like.core.values import unpack

PyTree = Any


class MeasuredProcessOutput(NamedTuple):
  """What every part's ``next`` returns (``tff.templates.MeasuredProcessOutput``).

  Attributes:
    state: the part's new state (a server-side pytree).
    result: the part's output, a :class:`~fedjax_like.core.FederatedValue` (or a plain pytree from
      a map-reduce ``report``).
    measurements: a server-side pytree (usually a dict of scalars) reported as metrics.
  """

  state: PyTree
  result: Any
  measurements: Any


class ClientStatesOutput(NamedTuple):
  """``next``'s output for an aggregation with client state: a measured output plus client states.

  Attributes:
    state: the new server state.
    result: the aggregate, ``T@SERVER``.
    measurements: a server-side pytree.
    client_states: the clients' new states, ``{S}@CLIENTS`` (one per client of the cohort).
  """

  state: PyTree
  result: Any
  measurements: Any
  client_states: Any


class MapReduceForm(NamedTuple):
  """An aggregation written as client summands and one server report (see the module docstring).

  Attributes:
    prepare: ``state -> b``, the value every client receives.
    work: ``(b, value, weight | None) -> summand`` for ONE client (``weight`` is None when the
      aggregator is unweighted). Pure JAX; runs inside the engine.
    report: ``(state, summed) -> MeasuredProcessOutput(state, result, measurements)`` on the server,
      where ``summed`` is the sum of ``work``'s outputs over the cohort; ``result`` is a plain
      pytree.
  """

  prepare: Callable[[PyTree], PyTree]
  work: Callable[[PyTree, PyTree, jax.Array | None], PyTree]
  report: Callable[[PyTree, PyTree], MeasuredProcessOutput]


class AggregationProcess(NamedTuple):
  """A stateful aggregation from CLIENTS to SERVER (``tff.templates.AggregationProcess``).

  Attributes:
    initialize: ``() -> state``.
    next: ``(state, value@CLIENTS, weight@CLIENTS | None) -> MeasuredProcessOutput``.
    value_type: the pytree of ``jax.ShapeDtypeStruct`` it aggregates (one client's value).
    is_weighted: whether ``next`` takes per-client weights.
    map_reduce: the :class:`MapReduceForm` ``next`` was derived from, or None (not a sum, or
      written directly with the intrinsics).
    name: names the aggregator in errors and reprs.
    initial_client_state: for an aggregation with client state (see the module docstring), the
      state of a client never seen (one client's pytree of arrays); None otherwise.
  """

  initialize: Callable[[], PyTree]
  next: Callable[..., MeasuredProcessOutput]
  value_type: PyTree
  is_weighted: bool
  map_reduce: MapReduceForm | None = None
  name: str = 'aggregator'
  initial_client_state: PyTree | None = None


class AggregationFactory(Protocol):
  """Builds an :class:`AggregationProcess` for a value type (``tff.aggregators`` factories)."""

  is_weighted: bool

  def create(self, value_type: PyTree) -> AggregationProcess: ...


def tensor_type(tree: PyTree) -> PyTree:
  """The pytree of ``jax.ShapeDtypeStruct`` of arrays, shape structs or abstract values."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(tuple(x.shape), x.dtype), tree)


def same_type(a: PyTree, b: PyTree) -> bool:
  """True when two pytrees of arrays (or shape structs) have one structure, shapes and dtypes."""
  if jax.tree.structure(a) != jax.tree.structure(b):
    return False
  return all(
      tuple(x.shape) == tuple(y.shape) and jax.numpy.dtype(x.dtype) == jax.numpy.dtype(y.dtype)
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


def format_type(tree: PyTree) -> str:
  """TFF-style text for a pytree type: ``<bias=float32[5],kernel=float32[12,5]>``."""
  return format_member_type(tensor_type(tree))


def _check_clients_value(name: str, what: str, value, expected: PyTree | None) -> None:
  if not isinstance(value, FederatedValue) or value.placement is not CLIENTS or value.all_equal:
    got = value.type_signature if isinstance(value, FederatedValue) else type(value).__name__
    raise TypeError(
        f'Aggregator {name!r}: {what} must be per-client values {{T}}@CLIENTS; got {got}.'
    )
  if expected is not None and not same_type(value.type_signature.member, expected):
    raise TypeError(
        f'Aggregator {name!r} was created for values of type {format_type(expected)} but was '
        f'given {what} of type {format_type(value.type_signature.member)}.'
    )


def _check_weight(name: str, weight, hint: str = '') -> None:
  """A TypeError unless a weighted aggregator's ``weight`` is given as ``{float}@CLIENTS``;
  ``hint`` ends the missing-weight message (e.g. ``' (or use X(weighted=False))'``)."""
  if weight is None:
    raise TypeError(
        f'Aggregator {name!r} is weighted: next(state, value, weight) needs weights{hint}.'
    )
  _check_clients_value(name, 'the weight', weight, None)


def ready(value: FederatedValue):
  """A SERVER value's pytree when it is computed already, else the (lazy) value itself."""
  return value if value.is_lazy else value.value


def settle(out: FederatedValue) -> MeasuredProcessOutput:
  """A process output from one SERVER value holding ``(state, result, measurements)``.

  Lazy (its reductions have not run: inside a computation), the three stay lazy SERVER values;
  otherwise state and measurements are plain pytrees and the result a SERVER value.
  """
  state, result, measurements = unpack(out, 3)
  if not out.is_lazy:
    result = federated_value(result, SERVER)
  return MeasuredProcessOutput(state, result, measurements)


def call_next(
    process: AggregationProcess,
    state: PyTree,
    value: FederatedValue,
    weight: FederatedValue | None = None,
    client_states: FederatedValue | None = None,
) -> tuple[MeasuredProcessOutput, FederatedValue | None]:
  """Runs ``process.next`` as its kind needs: ``(measured output, new client states or None)``.

  The weight is passed only to a weighted process, the client states only to one with client
  state (which must then be given them). What wrappers use to call their inner aggregation.
  """
  weight = weight if process.is_weighted else None
  if process.initial_client_state is None:
    return process.next(state, value, weight), None
  if client_states is None:
    raise TypeError(
        f'Aggregator {process.name!r} keeps client state: next(state, value, weight, '
        'client_states) needs the cohort\'s client states {S}@CLIENTS (start from '
        'initial_client_state).'
    )
  out = process.next(state, value, weight, client_states)
  return MeasuredProcessOutput(out.state, out.result, out.measurements), out.client_states


def check_client_states(name: str, client_states, expected: PyTree) -> None:
  """A TypeError unless ``client_states`` is ``{S}@CLIENTS`` of the expected one-client type."""
  if client_states is None:
    raise TypeError(
        f'Aggregator {name!r} keeps client state: next(state, value, weight, client_states) '
        'needs the cohort\'s client states {S}@CLIENTS (start from initial_client_state).'
    )
  _check_clients_value(name, 'the client states', client_states, tensor_type(expected))


def build_map_reduce_aggregation(
    initialize: Callable[[], PyTree],
    form: MapReduceForm,
    value_type: PyTree,
    is_weighted: bool,
    name: str,
) -> AggregationProcess:
  """An :class:`AggregationProcess` whose ``next`` is derived from its map-reduce ``form``.

  ``next`` broadcasts ``prepare(state)``, maps ``work`` over the clients and reduces with one
  ``federated_sum``, so a deferred client value is computed once, inside the reduction.
  """
  value_type = tensor_type(value_type)

  def next_fn(state, value: FederatedValue, weight: FederatedValue | None = None):
    _check_clients_value(name, 'the value', value, value_type)
    prepared = federated_broadcast(federated_value(form.prepare(state), SERVER))
    if is_weighted:
      _check_weight(name, weight)
      summands = federated_map(lambda b, v, w: form.work(b, v, w), (prepared, value, weight))
    else:
      summands = federated_map(lambda b, v: form.work(b, v, None), (prepared, value))
    out = federated_map(lambda summed: tuple(form.report(state, summed)), federated_sum(summands))
    return settle(out)

  return AggregationProcess(initialize, next_fn, value_type, is_weighted, form, name)
