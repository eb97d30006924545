"""Estimation processes: a server-side estimate updated from per-client values each round.

As ``tff.templates.EstimationProcess``, an estimation process is three pure functions over a
server-side state pytree:

    initialize() -> state
    next(state, value@CLIENTS) -> state           (value: one float32 scalar per client)
    report(state) -> estimate                      (a float32 scalar, the value used this round)

Clipping and zeroing take one as their norm (``clipping_factory(process, inner)``): the norm used in
a round is ``report(state)``, and ``next`` then sees every client's norm to update it. A float norm
is the constant process :func:`constant_process`.

**Map-reduce form.** Like an aggregator, an estimation process that is a sum of per-client terms
comes with an :class:`EstimationMapReduceForm`:

    prepare(state) -> b                    (server; sent to every client, e.g. the estimate C)
    work(b, value_i) -> summand_i          (one client, e.g. 1[norm_i <= C] - 1/2)
    update(state, sum_i summand_i) -> state   (server)

and ``next`` is derived from it (:func:`build_map_reduce_estimation`), so an outer aggregator can
fold the estimate's client work into its own ``work`` and its reduction into the round's one
``federated_sum``.
"""

from __future__ import annotations

from collections.abc import Callable
import math
from typing import Any, NamedTuple

import jax.numpy as jnp

from fedjax_like.core import (
    SERVER,
    FederatedValue,
    federated_broadcast,
    federated_map,
    federated_sum,
    federated_value,
)

PyTree = Any


class EstimationMapReduceForm(NamedTuple):
  """An estimation written as client summands and one server update (see the module docstring).

  Attributes:
    prepare: ``state -> b``, the value every client receives.
    work: ``(b, value) -> summand`` for ONE client; ``value`` is a float32 scalar.
    update: ``(state, summed) -> state`` on the server; ``summed`` is the sum of ``work``'s
      outputs over the cohort.
  """

  prepare: Callable[[PyTree], PyTree]
  work: Callable[[PyTree, Any], PyTree]
  update: Callable[[PyTree, PyTree], PyTree]


class EstimationProcess:
  """A stateful estimate from per-client float32 scalars (``tff.templates.EstimationProcess``).

  Args:
    initialize: ``() -> state``.
    next: ``(state, value@CLIENTS) -> state`` (``value`` a ``{float32}@CLIENTS``).
    report: ``state -> estimate`` (a float32 scalar at the server, as a plain array).
    map_reduce: the :class:`EstimationMapReduceForm`, or None when ``next`` is not a sum.
    name: names the process in errors and reprs.
  """

  def __init__(
      self,
      initialize: Callable[[], PyTree],
      next: Callable[[PyTree, FederatedValue], PyTree],  # noqa: A002 (TFF's name)
      report: Callable[[PyTree], Any],
      map_reduce: EstimationMapReduceForm | None = None,
      name: str = 'estimation_process',
  ):
    self.initialize = initialize
    self.next = next
    self.report = report
    self.map_reduce = map_reduce
    self.name = name

  def map(self, fn: Callable[[Any], Any]) -> EstimationProcess:
    """The same process reporting ``fn(report(state))`` (``EstimationProcess.map``).

    Only the report changes: ``next`` still updates the state from the clients' values as before
    (so a quantile estimate mapped to ``2C + 1`` keeps tracking the quantile ``C`` itself).
    """
    report = self.report
    return EstimationProcess(
        self.initialize,
        self.next,
        lambda state: fn(report(state)),
        self.map_reduce,
        f'{self.name}.map',
    )

  def __repr__(self) -> str:
    return f'EstimationProcess({self.name!r})'


def build_map_reduce_estimation(
    initialize: Callable[[], PyTree],
    form: EstimationMapReduceForm,
    report: Callable[[PyTree], Any],
    name: str,
) -> EstimationProcess:
  """An :class:`EstimationProcess` whose ``next`` is derived from its map-reduce ``form``.

  ``next`` broadcasts ``prepare(state)``, maps ``work`` over the clients, reduces with one
  ``federated_sum`` and applies ``update``.
  """

  def next_fn(state, value: FederatedValue):
    prepared = federated_broadcast(federated_value(form.prepare(state), SERVER))
    summands = federated_map(form.work, (prepared, value))
    new_state = federated_map(lambda summed: form.update(state, summed), federated_sum(summands))
    return new_state if new_state.is_lazy else new_state.value

  return EstimationProcess(initialize, next_fn, report, form, name)


def constant_process(value: float) -> EstimationProcess:
  """The process that always reports ``value`` (a fixed norm), with empty state."""
  constant = float(value)
  form = EstimationMapReduceForm(
      prepare=lambda state: (),
      work=lambda prepared, client_value: (),
      update=lambda state, summed: state,
  )
  return build_map_reduce_estimation(
      lambda: (), form, lambda state: jnp.asarray(constant, jnp.float32), f'constant({constant})'
  )


def as_norm_process(norm: float | EstimationProcess, what: str) -> EstimationProcess:
  """A float norm as a :func:`constant_process`, a process as itself; anything else is refused.

  Args:
    norm: a positive float, or an :class:`EstimationProcess`.
    what: the argument's name, for the error (``'clipping_norm'``).

  Raises:
    ValueError: a float norm that is not positive and finite.
    TypeError: neither a number nor an :class:`EstimationProcess`.
  """
  if isinstance(norm, EstimationProcess):
    return norm
  if isinstance(norm, bool) or not isinstance(norm, (int, float)):
    raise TypeError(
        f'{what} must be a float (a fixed norm) or an EstimationProcess (an adaptive norm, e.g. '
        f'PrivateQuantileEstimationProcess.no_noise(...)); got {type(norm).__name__}.'
    )
  if not (norm > 0 and math.isfinite(norm)):
    raise ValueError(
        f'{what} must be positive and finite; got {norm}. Pass the norm above which values are '
        'clipped or zeroed, e.g. 1.0, or an EstimationProcess for an adaptive norm.'
    )
  return constant_process(float(norm))
