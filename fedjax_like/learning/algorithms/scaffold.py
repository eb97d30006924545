"""SCAFFOLD (Karimireddy et al., 2020, "SCAFFOLD: Stochastic Controlled Averaging for Federated
Learning", ICML; Algorithm 1 with option II).

The server holds weights ``x`` and a control variate ``c``; client ``i`` holds its own ``c_i``
(zero until it first participates). A round over the cohort ``S`` of a federation of ``N`` clients:

    client i:  y_i <- x;  K_i times:  y_i <- y_i - eta_l (g_i(y_i) - c_i + c)   (a step per batch)
               c_i+ = c_i - c + (x - y_i) / (K_i eta_l)                          (option II)
               Delta y_i = y_i - x,   Delta c_i = c_i+ - c_i,   c_i <- c_i+
    server:    Delta x = sum_i p_i Delta y_i / sum_i p_i   (p_i = 1: the paper's 1/|S|)
               x <- x + eta_g Delta x
               c <- c + (1/N) sum_{i in S} Delta c_i         (= c + |S|/N mean_i Delta c_i)

``K_i`` is the number of (real) local steps of client ``i``. As a composition: broadcast
distributor, the ``scaffold`` client work below (its state holds ``c``; the update sent to the
aggregator is ``-Delta y_i``), the mean aggregator, and an ``apply_optimizer`` finalizer with server
SGD at ``eta_g`` (any server optimizer may replace it).

Stateful clients: the ``c_i`` live on the host in a
:class:`~fedjax_like.learning.client_states.ClientStates` store keyed by client id
(``state.client_work.clients``); each round the cohort's ``c_i`` are gathered into a
``[clients, ...]`` array, passed into the jitted round, and the new ones written back. Cohorts must
therefore name their clients (datasets from ``ClientData`` do). A client whose update is not finite
keeps its ``c_i`` and contributes no ``Delta c_i``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedjax_like.core import tree
from fedjax_like.core.engine import ClientLoop
from fedjax_like.learning import optimizers
from fedjax_like.learning.algorithms._common import (
    check_model,
    default_aggregator,
    initial_weights_fn,
    weights_type,
)
from fedjax_like.learning.client_weighting import (
    ClientWeighting,
    check_client_weighting,
    client_weight,
)
from fedjax_like.learning.process import LearningProcess
from fedjax_like.learning.templates import (
    ClientOutput,
    ClientResult,
    ClientWorkProcess,
    build_apply_optimizer_finalizer,
    build_broadcast_process,
    build_client_work,
    compose_learning_process,
)
from fedjax_like.learning.templates.model_delta_client_work import (
    TrainingState,
    client_keys,
    initial_training_state,
    next_round,
)
from fedjax_like.learning.templates.training import (
    add_to_gradient,
    start_training,
    train_metrics,
    training_step,
)
from fedjax_like.models.model import Model


class ScaffoldState(NamedTuple):
  """The SCAFFOLD client work's server state: the round, the key seed and the control variate c."""

  training: TrainingState
  control_variate: optax.Params


def build_scaffold_client_work(
    model: Model,
    client_learning_rate: float,
    num_total_clients: int,
    client_weighting: ClientWeighting | Callable = ClientWeighting.UNIFORM,
    client_learning_rate_fn: Callable | None = None,
    seed: int = 0,
) -> ClientWorkProcess:
  """SCAFFOLD's client work (see the module docstring): corrected local SGD, option II variates."""
  check_client_weighting(client_weighting)
  learning_rate = client_learning_rate_fn or (lambda round_num: client_learning_rate)
  zeros = jax.tree.map(
      lambda s: np.zeros(s.shape, s.dtype), weights_type(model).trainable
  )

  def initialize():
    return ScaffoldState(initial_training_state(seed), jax.tree.map(jnp.asarray, zeros))

  def prepare(state: ScaffoldState, num_clients: int):
    prepared = (state.training.round_num, state.control_variate)
    return prepared, client_keys(state.training, num_clients)

  def make_optimizer(context):
    eta, server_variate, client_variate = context
    return optax.chain(add_to_gradient(tree.sub(server_variate, client_variate)), optax.sgd(eta))

  def init(shared, client):
    ((round_num, server_variate), weights), (key, client_variate) = shared, client
    eta = jnp.asarray(learning_rate(round_num), jnp.float32)
    context = (eta, server_variate, client_variate)
    return start_training(model, make_optimizer, weights, key, context)

  def finish(shared, carry):
    eta, server_variate, client_variate = carry.context
    weights = carry.weights
    update = tree.sub(weights.trainable, carry.params)  # x - y_i = -Delta y_i
    num_steps = carry.sums['num_batches']
    scale = 1.0 / jnp.maximum(num_steps * eta, 1e-30)
    new_variate = jax.tree.map(
        lambda ci, c, u: ci - c + scale * u, client_variate, server_variate, update
    )
    finite = tree.all_finite(update) & tree.all_finite(new_variate)
    new_variate = tree.where(finite, new_variate, client_variate)
    delta_variate = tree.sub(new_variate, client_variate)
    weight = client_weight(client_weighting, carry.sums['num_examples'])
    summands = (carry.sums, delta_variate)
    return ClientOutput(ClientResult(update, weight), summands, new_variate)

  loop = ClientLoop(init, training_step(model, make_optimizer), finish)

  def report(state: ScaffoldState, summed):
    metric_sums, delta_variate_sum = summed
    variate = jax.tree.map(
        lambda c, d: c + d / num_total_clients, state.control_variate, delta_variate_sum
    )
    new_state = ScaffoldState(next_round(state.training), variate)
    return new_state, {'train': train_metrics(model, metric_sums)}

  return build_client_work(
      model, initialize, prepare, loop, report, initial_client_state=zeros, name='scaffold'
  )


def build_scaffold(
    model: Model,
    client_learning_rate: float,
    num_total_clients: int,
    server_learning_rate: float = 1.0,
    client_weighting: ClientWeighting | Callable = ClientWeighting.UNIFORM,
    server_optimizer_fn=None,
    model_distributor=None,
    model_aggregator=None,
    client_learning_rate_fn: Callable | None = None,
    seed: int = 0,
    *,
    runtime=None,
) -> LearningProcess:
  """SCAFFOLD with option II control variates.

  Args:
    model: the model.
    client_learning_rate: ``eta_l``, the clients' SGD learning rate.
    num_total_clients: ``N``, the number of clients in the federation (for ``c``'s update).
    server_learning_rate: ``eta_g`` (server SGD on ``-Delta x``).
    client_weighting: weights of ``Delta y_i`` in ``Delta x`` (default UNIFORM, as the paper).
    server_optimizer_fn: replaces server SGD at ``eta_g`` when given.
    model_distributor: a ``DistributionProcess`` (default: broadcast).
    model_aggregator: an aggregation factory for the updates (default: the mean).
    client_learning_rate_fn: optional ``round_num -> eta_l`` (then ``client_learning_rate`` is
      ignored).
    seed: seeds the initial weights and client keys.
  """
  check_model(model)
  if not (isinstance(num_total_clients, int) and num_total_clients >= 1):
    raise ValueError(f'num_total_clients (N) must be a positive int; got {num_total_clients!r}.')
  if not client_learning_rate > 0:
    raise ValueError(f'client_learning_rate must be > 0; got {client_learning_rate!r}.')
  weights = weights_type(model)
  server = server_optimizer_fn or optimizers.build_sgdm(server_learning_rate)
  client_work = build_scaffold_client_work(
      model, client_learning_rate, num_total_clients, client_weighting, client_learning_rate_fn,
      seed,
  )
  return compose_learning_process(
      initial_weights_fn(model, seed),
      model_distributor or build_broadcast_process(weights),
      client_work,
      default_aggregator(model_aggregator, client_weighting, 'build_scaffold'),
      build_apply_optimizer_finalizer(server, weights),
      name='scaffold',
      runtime=runtime,
  )
