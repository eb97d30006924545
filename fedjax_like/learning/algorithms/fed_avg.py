"""Federated Averaging (McMahan et al., 2017, "Communication-Efficient Learning of Deep Networks
from Decentralized Data"), with a server optimizer as in Reddi et al., 2020 ("Adaptive Federated
Optimization") and learning rates scheduled by round.

One round ``t``, for the cohort ``S`` and global weights ``w``:

    client i:  w_i = LocalTraining(w, D_i, client_optimizer(eta_l(t)))      one step per batch
               u_i = w - w_i                                                (pseudo-gradient)
    server:    u   = sum_i p_i u_i / sum_i p_i
               w'  = ServerOptimizer(eta_g(t)).step(w, gradient=u)

``p_i = n_i`` (examples processed) for weighted FedAvg, ``p_i = 1`` for unweighted, or a user
function of ``n_i``. With the default server optimizer, SGD at 1.0,
``w' = sum_i p_i w_i / sum_i p_i``; SGD with momentum gives FedAvgM (Hsu et al., 2019); Adam,
Yogi, Adagrad give FedOpt (see fed_opt). A client whose update is not finite gets weight 0
(``metrics['aggregator']['num_clients_non_finite']``).

Composition: ``broadcast`` distributor, ``model_delta`` client work, a mean aggregator (any factory
via ``model_aggregator``), ``apply_optimizer`` finalizer. The round is one fused map-reduce.
"""

from __future__ import annotations

from collections.abc import Callable

from fedjax_like.learning import optimizers
from fedjax_like.learning.algorithms._common import (
    check_model,
    default_aggregator,
    initial_weights_fn,
    weights_type,
)
from fedjax_like.learning.client_weighting import ClientWeighting
from fedjax_like.learning.process import LearningProcess
from fedjax_like.learning.templates import (
    build_apply_optimizer_finalizer,
    build_broadcast_process,
    build_model_delta_client_work,
    compose_learning_process,
)
from fedjax_like.models.model import Model


def build_fed_avg(
    model: Model,
    client_optimizer_fn,
    server_optimizer_fn=None,
    client_weighting: ClientWeighting | Callable = ClientWeighting.NUM_EXAMPLES,
    model_distributor=None,
    model_aggregator=None,
    client_learning_rate_fn: Callable | None = None,
    server_learning_rate_fn: Callable | None = None,
    proximal_strength: float = 0.0,
    seed: int = 0,
    name: str = 'fed_avg',
    *,
    runtime=None,
) -> LearningProcess:
  """FedAvg composed from the four parts (the builders below fix ``client_weighting``)."""
  check_model(model)
  weights = weights_type(model)
  server = server_optimizer_fn if server_optimizer_fn is not None else optimizers.build_sgdm(1.0)
  client_work = build_model_delta_client_work(
      model, client_optimizer_fn, client_weighting, client_learning_rate_fn, proximal_strength, seed
  )
  return compose_learning_process(
      initial_weights_fn(model, seed),
      model_distributor or build_broadcast_process(weights),
      client_work,
      default_aggregator(model_aggregator, client_weighting, f'build_{name}'),
      build_apply_optimizer_finalizer(server, weights, server_learning_rate_fn),
      name=name,
      runtime=runtime,
  )


def build_weighted_fed_avg(
    model: Model,
    client_optimizer_fn,
    server_optimizer_fn=None,
    client_weighting: ClientWeighting | Callable = ClientWeighting.NUM_EXAMPLES,
    model_distributor=None,
    model_aggregator=None,
    client_learning_rate_fn: Callable | None = None,
    server_learning_rate_fn: Callable | None = None,
    seed: int = 0,
    *,
    runtime=None,
) -> LearningProcess:
  """FedAvg with client updates weighted by example count (or ``client_weighting``).

  Args:
    model: a :class:`~fedjax_like.models.model.Model` (see ``models.from_linen`` / ``from_nnx``).
    client_optimizer_fn: the client optimizer, e.g. ``build_sgdm(learning_rate=0.1)``; with
      ``client_learning_rate_fn``, a function ``learning_rate -> optimizer``.
    server_optimizer_fn: the server optimizer (default ``build_sgdm(1.0)``: ``w - mean update``);
      ``build_sgdm(1.0, momentum=0.9)`` gives FedAvgM, ``build_adam`` FedAdam. With
      ``server_learning_rate_fn``, a function ``learning_rate -> optimizer``.
    client_weighting: ``ClientWeighting.NUM_EXAMPLES`` (default), ``UNIFORM``, or a function
      ``num_examples -> weight`` (traced with JAX).
    model_distributor: a ``DistributionProcess`` (default: broadcast).
    model_aggregator: an aggregation factory (default ``aggregators.MeanFactory()``).
    client_learning_rate_fn: optional ``round_num -> client learning rate``.
    server_learning_rate_fn: optional ``round_num -> server learning rate``.
    seed: seeds the initial weights and per-round client keys.
    runtime: the :class:`~fedjax_like.core.engine.Runtime` that runs its rounds (default: the
      runtime in force when ``next`` is called, ``Runtime('auto')`` unless inside ``execution``).

  Returns:
    A :class:`~fedjax_like.learning.process.LearningProcess`.
  """
  return build_fed_avg(
      model, client_optimizer_fn, server_optimizer_fn, client_weighting, model_distributor,
      model_aggregator, client_learning_rate_fn, server_learning_rate_fn, seed=seed,
      name='weighted_fed_avg', runtime=runtime,
  )


def build_unweighted_fed_avg(
    model: Model,
    client_optimizer_fn,
    server_optimizer_fn=None,
    model_distributor=None,
    model_aggregator=None,
    client_learning_rate_fn: Callable | None = None,
    server_learning_rate_fn: Callable | None = None,
    seed: int = 0,
    *,
    runtime=None,
) -> LearningProcess:
  """FedAvg with every client's update weighted equally (``p_i = 1``; aggregator default
  ``aggregators.UnweightedMeanFactory()``). Arguments as :func:`build_weighted_fed_avg`."""
  return build_fed_avg(
      model, client_optimizer_fn, server_optimizer_fn, ClientWeighting.UNIFORM, model_distributor,
      model_aggregator, client_learning_rate_fn, server_learning_rate_fn, seed=seed,
      name='unweighted_fed_avg', runtime=runtime,
  )
