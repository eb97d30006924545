"""Federated SGD (McMahan et al., 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data", the FedSGD baseline; Shokri & Shmatikov, 2015).

Each client computes the gradient of its mean loss at the broadcast weights over ALL its data, and
the server takes one optimizer step on the weighted mean of those gradients:

    client i:  g_i = (1/n_i) sum_{(x,y) in D_i} grad l(w; x, y)        (no local step)
    server:    g   = sum_i p_i g_i / sum_i p_i                         (p_i = n_i by default)
               w'  = ServerOptimizer(eta(t)).step(w, gradient=g)

With ``p_i = n_i`` and server SGD at ``eta``, a round is exactly one step of gradient descent on the
union of the cohort's data: ``w' = w - eta grad L_S(w)``. Metrics are measured at ``w``.

Composition: broadcast, ``gradient`` client work (below), mean aggregator, ``apply_optimizer``
finalizer.
"""

from __future__ import annotations

from collections.abc import Callable

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
    client_keys,
    initial_training_state,
    next_round,
)
from fedjax_like.learning.templates.training import (
    gradient_step,
    mean_gradient,
    start_gradient,
    train_metrics,
)
from fedjax_like.models.model import Model


def build_gradient_client_work(
    model: Model,
    client_weighting: ClientWeighting | Callable = ClientWeighting.NUM_EXAMPLES,
    seed: int = 0,
) -> ClientWorkProcess:
  """Client work whose update is the full-batch gradient ``g_i`` at the broadcast weights."""
  check_client_weighting(client_weighting)

  def prepare(state, num_clients):
    return (), client_keys(state, num_clients)

  def init(shared, client):
    (_, weights), (key, _) = shared, client
    return start_gradient(model, weights, key)

  def finish(shared, carry):
    weight = client_weight(client_weighting, carry.sums['num_examples'])
    return ClientOutput(ClientResult(mean_gradient(carry), weight), carry.sums)

  loop = ClientLoop(init, gradient_step(model), finish)

  def report(state, sums):
    return next_round(state), {'train': train_metrics(model, sums)}

  return build_client_work(
      model, lambda: initial_training_state(seed), prepare, loop, report, name='gradient'
  )


def build_fed_sgd(
    model: Model,
    server_optimizer_fn=None,
    client_weighting: ClientWeighting | Callable = ClientWeighting.NUM_EXAMPLES,
    model_distributor=None,
    model_aggregator=None,
    server_learning_rate_fn: Callable | None = None,
    seed: int = 0,
    *,
    runtime=None,
) -> LearningProcess:
  """FedSGD.

  Args:
    model: the model.
    server_optimizer_fn: the server optimizer (default ``build_sgdm(0.1)``, as TFF); with
      ``server_learning_rate_fn``, a function ``learning_rate -> optimizer``.
    client_weighting: how client gradients are weighted (default: by example count).
    model_distributor: a ``DistributionProcess`` (default: broadcast).
    model_aggregator: an aggregation factory (default: the mean).
    server_learning_rate_fn: optional ``round_num -> learning rate``.
    seed: seeds the initial weights and client keys.
  """
  check_model(model)
  weights = weights_type(model)
  server = server_optimizer_fn if server_optimizer_fn is not None else optimizers.build_sgdm(0.1)
  return compose_learning_process(
      initial_weights_fn(model, seed),
      model_distributor or build_broadcast_process(weights),
      build_gradient_client_work(model, client_weighting, seed),
      default_aggregator(model_aggregator, client_weighting, 'build_fed_sgd'),
      build_apply_optimizer_finalizer(server, weights, server_learning_rate_fn),
      name='fed_sgd',
      runtime=runtime,
  )
