"""Finalizers: how the server turns the aggregated update into new model weights.

A :class:`FinalizerProcess` is a pure ``(initialize, next)`` pair (``tff.learning.templates``):

    initialize() -> state
    next(state, weights@SERVER, update@SERVER)
        -> MeasuredProcessOutput(state, weights'@SERVER, measurements)

:func:`build_apply_optimizer_finalizer` applies a server optimizer, treating the aggregated update
(the mean pseudo-gradient ``w - w_i``) as a gradient:

    (u, s') = server_optimizer(lr_t).update(update, s, w)        w' = w + u

So SGD at 1.0 gives FedAvg's ``w' = mean_i w_i``, SGD with momentum FedAvgM, Adam FedAdam.
``lr_t = server_learning_rate_fn(t)`` when a schedule is given; the round ``t`` is kept in the state
(:class:`ScheduledOptimizerState`). As in TFF, a non-finite update is rejected: weights and
optimizer state stay as they were and ``measurements['update_non_finite']`` is 1. The optimizer
state is initialized from zeros of the weights' shapes, as TFF does (so optimizers whose state
copies the initial parameter values, such as lookahead, do not fit here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_like.aggregators.factory import MeasuredProcessOutput, tensor_type
from fedjax_like.core import SERVER, FederatedValue, federated_value, tree
from fedjax_like.learning import optimizers
from fedjax_like.models.model import ModelWeights

PyTree = Any


class FinalizerProcess(NamedTuple):
  """Updates the global model from the aggregated update.

  Attributes:
    initialize: ``() -> state``.
    next: ``(state, weights@SERVER, update@SERVER) -> MeasuredProcessOutput(state, weights@SERVER,
      measurements)``.
    weights_type: the model weights it updates.
    update_type: the aggregated update it takes.
    name: names the part in errors.
  """

  initialize: Callable[[], PyTree]
  next: Callable[[PyTree, FederatedValue, FederatedValue], MeasuredProcessOutput]
  weights_type: PyTree
  update_type: PyTree
  name: str = 'finalizer'


class ScheduledOptimizerState(NamedTuple):
  """Server optimizer state with the round number its learning-rate schedule reads."""

  round_num: jax.Array
  optimizer_state: PyTree


def _server_values(name: str, weights, update) -> tuple[ModelWeights, PyTree]:
  for what, value in (('weights', weights), ('update', update)):
    if not isinstance(value, FederatedValue) or value.placement is not SERVER:
      raise TypeError(f'Finalizer {name!r} takes {what}@SERVER; got {value!r}.')
  return weights.value, update.value


def build_apply_optimizer_finalizer(
    server_optimizer_fn,
    weights_type: PyTree,
    server_learning_rate_fn: Callable | None = None,
) -> FinalizerProcess:
  """The server optimizer step (see the module docstring).

  Args:
    server_optimizer_fn: an optimizer (``build_sgdm(1.0)``); with ``server_learning_rate_fn``, a
      function ``learning_rate -> optimizer``.
    weights_type: the model's ``ModelWeights`` (arrays or shape structs).
    server_learning_rate_fn: optional ``round_num -> learning_rate``.
  """
  weights_type = tensor_type(weights_type)
  scheduled = server_learning_rate_fn is not None
  optimizer_for_round = optimizers.for_round(
      server_optimizer_fn, server_learning_rate_fn, 'server_optimizer_fn'
  )
  zeros = lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), weights_type.trainable)

  def initialize():
    optimizer_state = optimizer_for_round(jnp.zeros((), jnp.int32)).init(zeros())
    if scheduled:
      return ScheduledOptimizerState(jnp.zeros((), jnp.int32), optimizer_state)
    return optimizer_state

  def next_fn(state, weights, update) -> MeasuredProcessOutput:
    weights, update = _server_values('apply_optimizer', weights, update)
    round_num = state.round_num if scheduled else jnp.zeros((), jnp.int32)
    optimizer_state = state.optimizer_state if scheduled else state
    optimizer = optimizer_for_round(round_num)
    updates, new_optimizer_state = optimizer.update(update, optimizer_state, weights.trainable)
    new_trainable = optax.apply_updates(weights.trainable, updates)
    finite = tree.all_finite(update)
    new_trainable = tree.where(finite, new_trainable, weights.trainable)
    new_optimizer_state = tree.where(finite, new_optimizer_state, optimizer_state)
    if scheduled:
      new_state = ScheduledOptimizerState(round_num + 1, new_optimizer_state)
    else:
      new_state = new_optimizer_state
    new_weights = weights._replace(trainable=new_trainable)
    measurements = {'update_non_finite': (~finite).astype(jnp.int32)}
    return MeasuredProcessOutput(new_state, federated_value(new_weights, SERVER), measurements)

  return FinalizerProcess(
      initialize, next_fn, weights_type, weights_type.trainable, 'apply_optimizer'
  )


def build_identity_finalizer(weights_type: PyTree, update_type: PyTree = ()) -> FinalizerProcess:
  """Keeps the weights as they are (evaluation processes); takes an update of ``update_type``."""
  weights_type = tensor_type(weights_type)

  def next_fn(state, weights, update) -> MeasuredProcessOutput:
    weights, _ = _server_values('identity', weights, update)
    return MeasuredProcessOutput(state, federated_value(weights, SERVER), {})

  return FinalizerProcess(lambda: (), next_fn, weights_type, tensor_type(update_type), 'identity')
