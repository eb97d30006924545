"""Distributors: how the server's model reaches the clients (``tff.learning.templates``).

A :class:`DistributionProcess` is a pure ``(initialize, next)`` pair:

    initialize() -> state
    next(state, weights@SERVER) -> MeasuredProcessOutput(state, weights@CLIENTS, measurements)

:func:`build_broadcast_process` is the standard one: ``federated_broadcast``, stateless, no
measurements. A broadcast value is all-equal at CLIENTS and never copied per client. A custom
distributor (compressing the broadcast, sending a personalized model) replaces it without touching
the other parts, as long as it sends weights of the same type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from fedjax_like.aggregators.factory import MeasuredProcessOutput, tensor_type
from fedjax_like.core import SERVER, FederatedValue, federated_broadcast

PyTree = Any


class DistributionProcess(NamedTuple):
  """Sends the model weights from SERVER to CLIENTS.

  Attributes:
    initialize: ``() -> state``.
    next: ``(state, weights@SERVER) -> MeasuredProcessOutput(state, weights@CLIENTS,
      measurements)``.
    weights_type: the weights it takes and sends (pytree of ``jax.ShapeDtypeStruct``).
    name: names the part in errors.
  """

  initialize: Callable[[], PyTree]
  next: Callable[[PyTree, FederatedValue], MeasuredProcessOutput]
  weights_type: PyTree
  name: str = 'distributor'


def build_broadcast_process(weights_type: PyTree) -> DistributionProcess:
  """The stateless broadcast of weights of ``weights_type`` (arrays or shape structs)."""
  weights_type = tensor_type(weights_type)

  def next_fn(state, weights: FederatedValue) -> MeasuredProcessOutput:
    if not isinstance(weights, FederatedValue) or weights.placement is not SERVER:
      raise TypeError(f'The broadcast distributor takes weights@SERVER; got {weights!r}.')
    return MeasuredProcessOutput(state, federated_broadcast(weights), {})

  return DistributionProcess(lambda: (), next_fn, weights_type, 'broadcast')
