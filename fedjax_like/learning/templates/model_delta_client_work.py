"""Model-delta client work: local training whose update is the model's change (FedAvg, FedProx).

For broadcast weights ``w`` and client ``i`` with data ``D_i``:

    w_i      = LocalTraining(w, D_i, client_optimizer(lr_t))     one step per batch, in order
    update_i = w - w_i                                           (a pseudo-gradient, as in TFF)
    weight_i = n_i | 1 | user_fn(n_i)                            (client_weighting)

With ``proximal_strength`` mu > 0 each step's gradient gets FedProx's proximal pull
``g + mu (w_i - w)`` (Li et al., 2020). ``lr_t = client_learning_rate_fn(t)`` when a schedule is
given (``t`` is the round number, counted in the state).

State: :class:`TrainingState` ``(round_num, rng)``; each round client ``k`` gets the key
``split(fold_in(rng, round_num), num_clients)[k]`` for stochastic layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_like.core import tree
from fedjax_like.core.engine import ClientLoop
from fedjax_like.learning import optimizers
from fedjax_like.learning.client_weighting import (
    ClientWeighting,
    check_client_weighting,
    client_weight,
)
from fedjax_like.learning.templates.client_works import (
    ClientOutput,
    ClientResult,
    ClientWorkProcess,
    build_client_work,
)
from fedjax_like.learning.templates.training import (
    proximal_term,
    start_training,
    train_metrics,
    training_step,
)
from fedjax_like.models.model import Model


class TrainingState(NamedTuple):
  """The state of a training client work: the round number and the seed of per-client keys."""

  round_num: jax.Array
  rng: jax.Array


def initial_training_state(seed: int) -> TrainingState:
  """Round 0 and the key data of ``fold_in(key(seed), 1)`` (the weights use ``fold_in(.., 0)``)."""
  key = jax.random.fold_in(jax.random.key(seed), 1)
  return TrainingState(jnp.zeros((), jnp.int32), jax.random.key_data(key))


def client_keys(state: TrainingState, num_clients: int) -> jax.Array:
  """Key data ``[num_clients, ...]`` for this round's clients."""
  round_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.round_num)
  return jax.random.key_data(jax.random.split(round_key, num_clients))


def next_round(state: TrainingState) -> TrainingState:
  return state._replace(round_num=state.round_num + 1)


def build_model_delta_client_work(
    model: Model,
    client_optimizer_fn,
    client_weighting: ClientWeighting | Callable = ClientWeighting.NUM_EXAMPLES,
    client_learning_rate_fn: Callable | None = None,
    proximal_strength: float = 0.0,
    seed: int = 0,
) -> ClientWorkProcess:
  """Local training returning ``update = w - w_i`` weighted by ``client_weighting``.

  Args:
    model: the model.
    client_optimizer_fn: an optimizer (``build_sgdm(0.1)``); with ``client_learning_rate_fn``, a
      function ``learning_rate -> optimizer``.
    client_weighting: ``ClientWeighting.NUM_EXAMPLES``, ``UNIFORM`` or ``num_examples -> weight``.
    client_learning_rate_fn: optional ``round_num -> learning_rate``.
    proximal_strength: FedProx's mu (0 gives plain local training).
    seed: seeds the per-client keys.
  """
  optimizer_for_round = optimizers.for_round(
      client_optimizer_fn, client_learning_rate_fn, 'client_optimizer_fn'
  )
  check_client_weighting(client_weighting)
  if not proximal_strength >= 0:
    raise ValueError(f'proximal_strength must be >= 0; got {proximal_strength!r}.')

  def prepare(state: TrainingState, num_clients: int):
    return state.round_num, client_keys(state, num_clients)

  def make_optimizer(context):
    round_num, anchor = context
    optimizer = optimizer_for_round(round_num)
    if proximal_strength > 0:
      optimizer = optax.chain(proximal_term(anchor, proximal_strength), optimizer)
    return optimizer

  def init(shared, client):
    (round_num, weights), (key, _) = shared, client
    anchor = weights.trainable if proximal_strength > 0 else ()
    return start_training(model, make_optimizer, weights, key, (round_num, anchor))

  def finish(shared, carry):
    update = tree.sub(carry.weights.trainable, carry.params)
    weight = client_weight(client_weighting, carry.sums['num_examples'])
    return ClientOutput(ClientResult(update, weight), carry.sums)

  loop = ClientLoop(init, training_step(model, make_optimizer), finish)

  def report(state: TrainingState, metric_sums):
    return next_round(state), {'train': train_metrics(model, metric_sums)}

  name = 'proximal' if proximal_strength > 0 else 'model_delta'
  return build_client_work(
      model, lambda: initial_training_state(seed), prepare, loop, report, name=name
  )
