"""MimeLite (Karimireddy et al., 2021, "Breaking the centralized barrier for cross-device federated
learning", NeurIPS; the "Mime Lite" variant), as TFF's ``build_weighted_mime_lite``.

A base optimizer ``B`` (update ``B(g, s)`` and state update ``U(g, s)``, e.g. SGD with momentum)
has its state ``s`` kept at the server and *frozen* during local training:

    client i:  y_i <- x;  for each batch:  y_i <- y_i + B(g_i(y_i), s)        (s not updated)
               u_i = x - y_i;   h_i = grad f_i(x)   (full-batch gradient at x, over all of D_i)
    server:    u = sum_i p_i u_i / sum_i p_i,          x <- ServerOptimizer.step(x, gradient=u)
               h = sum_i p_i h_i / sum_i p_i,          s <- U(h, s)

For ``B = build_sgdm(eta, momentum=beta)``: client steps ``y <- y - eta (g + beta m)`` and the
server's ``m <- beta m + h``. Default server optimizer: SGD at 1.0 (``x <- x - u``). The mean of
``h_i`` uses ``full_gradient_aggregator`` (default ``MeanFactory``; it must come in map-reduce form,
so it is fused into the same single reduction as the model update). As in TFF, training metrics
are measured during local training, not on the full-gradient pass.

Composition: broadcast, the ``mime_lite`` client work below (its state is ``s`` and the
full-gradient aggregator's state), the model-update aggregator, ``apply_optimizer`` finalizer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fedjax_like.aggregators.mean import MeanFactory
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
    gradient_step,
    mean_gradient,
    start_gradient,
    start_training,
    train_metrics,
    training_step,
    with_fixed_state,
)
from fedjax_like.models.model import Model

PyTree = Any


class MimeLiteState(NamedTuple):
  """The MimeLite client work's server state."""

  training: TrainingState
  optimizer_state: PyTree
  full_gradient_aggregator: PyTree


def build_mime_lite_client_work(
    model: Model,
    base_optimizer,
    client_weighting: ClientWeighting | Callable = ClientWeighting.NUM_EXAMPLES,
    full_gradient_aggregator=None,
    seed: int = 0,
) -> ClientWorkProcess:
  """MimeLite's client work (see the module docstring)."""
  optimizer = optimizers.as_transformation(base_optimizer, 'base_optimizer')
  check_client_weighting(client_weighting)
  trainable_type = weights_type(model).trainable
  factory = full_gradient_aggregator or MeanFactory()
  gradient_aggregator = factory.create(trainable_type)
  form = gradient_aggregator.map_reduce
  if form is None or not gradient_aggregator.is_weighted:
    raise TypeError(
        'full_gradient_aggregator must be a weighted aggregator in map-reduce form (a sum, e.g. '
        f'MeanFactory()); got {factory!r}.'
    )
  zeros = lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), trainable_type)

  def initialize():
    return MimeLiteState(
        initial_training_state(seed), optimizer.init(zeros()), gradient_aggregator.initialize()
    )

  def prepare(state: MimeLiteState, num_clients: int):
    prepared = (state.optimizer_state, form.prepare(state.full_gradient_aggregator))
    return prepared, client_keys(state.training, num_clients)

  def make_optimizer(optimizer_state):
    return with_fixed_state(optimizer, optimizer_state)

  train_step, grad_step = training_step(model, make_optimizer), gradient_step(model)

  def init(shared, client):
    ((optimizer_state, _), weights), (key, _) = shared, client
    gradient_rng, training_rng = jax.random.key_data(
        jax.random.split(jax.random.wrap_key_data(key))
    )
    return (
        start_training(model, make_optimizer, weights, training_rng, optimizer_state),
        start_gradient(model, weights, gradient_rng),
    )

  def step(carry, batch, mask):
    # One pass over the client's data: a local step at y_i and the gradient at x, per batch.
    training, gradient = carry
    return train_step(training, batch, mask), grad_step(gradient, batch, mask)

  def finish(shared, carry):
    (_, gradient_prepared), _ = shared
    training, gradient = carry
    update = tree.sub(training.weights.trainable, training.params)
    weight = client_weight(client_weighting, training.sums['num_examples'])
    gradient_summand = form.work(gradient_prepared, mean_gradient(gradient), weight)
    return ClientOutput(ClientResult(update, weight), (training.sums, gradient_summand))

  def report(state: MimeLiteState, summed):
    metric_sums, gradient_summed = summed
    gradient_out = form.report(state.full_gradient_aggregator, gradient_summed)
    _, optimizer_state = optimizer.update(gradient_out.result, state.optimizer_state, zeros())
    new_state = MimeLiteState(next_round(state.training), optimizer_state, gradient_out.state)
    return new_state, {'train': train_metrics(model, metric_sums)}

  loop = ClientLoop(init, step, finish)
  return build_client_work(model, initialize, prepare, loop, report, name='mime_lite')


def _server_optimizer(server_optimizer, server_optimizer_fn):
  if server_optimizer is not None and server_optimizer_fn is not None:
    raise TypeError('Give server_optimizer (TFF 0.87\'s name) or server_optimizer_fn, not both.')
  return server_optimizer if server_optimizer is not None else server_optimizer_fn


def build_weighted_mime_lite(
    model: Model,
    base_optimizer,
    server_optimizer=None,
    client_weighting: ClientWeighting | Callable = ClientWeighting.NUM_EXAMPLES,
    model_distributor=None,
    model_aggregator=None,
    full_gradient_aggregator=None,
    seed: int = 0,
    *,
    server_optimizer_fn=None,
    runtime=None,
) -> LearningProcess:
  """MimeLite with updates and full gradients weighted by example count.

  Args:
    model: the model.
    base_optimizer: ``B``, e.g. ``build_sgdm(0.1, momentum=0.9)``; its state lives at the server.
    server_optimizer: applied to the mean update (default ``build_sgdm(1.0)``), TFF 0.87's name.
    client_weighting: ``p_i`` (default: example count).
    model_distributor: a ``DistributionProcess`` (default: broadcast).
    model_aggregator: an aggregation factory for the updates (default: the mean).
    full_gradient_aggregator: a weighted, sum-shaped factory for the full gradients.
    seed: seeds the initial weights and client keys.
    server_optimizer_fn: the former name of ``server_optimizer`` (give one of the two).
  """
  check_model(model)
  weights = weights_type(model)
  server_optimizer = _server_optimizer(server_optimizer, server_optimizer_fn)
  server = server_optimizer if server_optimizer is not None else optimizers.build_sgdm(1.0)
  client_work = build_mime_lite_client_work(
      model, base_optimizer, client_weighting, full_gradient_aggregator, seed
  )
  return compose_learning_process(
      initial_weights_fn(model, seed),
      model_distributor or build_broadcast_process(weights),
      client_work,
      default_aggregator(model_aggregator, client_weighting, 'build_weighted_mime_lite'),
      build_apply_optimizer_finalizer(server, weights),
      name='mime_lite',
      runtime=runtime,
  )


def build_unweighted_mime_lite(
    model: Model,
    base_optimizer,
    server_optimizer=None,
    model_distributor=None,
    model_aggregator=None,
    full_gradient_aggregator=None,
    seed: int = 0,
    *,
    server_optimizer_fn=None,
    runtime=None,
) -> LearningProcess:
  """MimeLite with every client weighted equally (arguments as ``build_weighted_mime_lite``)."""
  server_optimizer = _server_optimizer(server_optimizer, server_optimizer_fn)
  return build_weighted_mime_lite(
      model, base_optimizer, server_optimizer, ClientWeighting.UNIFORM, model_distributor,
      model_aggregator, full_gradient_aggregator, seed, runtime=runtime,
  )
