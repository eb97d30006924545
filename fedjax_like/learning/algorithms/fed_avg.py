"""Federated Averaging (McMahan et al., 2017, "Communication-Efficient Learning of Deep Networks
from Decentralized Data"), with a server optimizer as in Reddi et al., 2020 ("Adaptive Federated
Optimization").

One round, for the cohort ``S`` and broadcast weights ``w``:

    client i:  w_i = LocalTraining(w, D_i, client_optimizer)     delta_i = w_i - w
    server:    delta = sum_i p_i delta_i / sum_i p_i
               w' = ServerOptimizer(w, gradient = -delta)

with ``p_i = n_i`` (examples processed) for weighted FedAvg and ``p_i = 1`` for unweighted. With the
default server optimizer, SGD at learning rate 1.0, ``w' = w + delta``. A client whose delta is not
finite gets weight 0 (as in TFF) and is counted in ``metrics['aggregator']['num_clients_non_finite']``.

The round is written with the Federated Core's intrinsics and compiled as one program:

    weights@SERVER --federated_broadcast--> weights@CLIENTS
      --federated_map(local_training)--> {(delta, p, metric sums)}@CLIENTS
      --federated_sum--> (sum p*delta, sum p, metric sums)@SERVER --server optimizer--> weights'@SERVER
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from fedjax_like.core import tree
from fedjax_like.core.intrinsics import (
    FederatedValue,
    federated_broadcast,
    federated_map,
    federated_sum,
    federated_value,
)
from fedjax_like.core.placements import CLIENTS, SERVER
from fedjax_like.learning import optimizers
from fedjax_like.learning.process import LearningAlgorithmState, LearningProcess
from fedjax_like.learning.templates.client_works import local_training
from fedjax_like.models.model import Model, ModelWeights

PyTree = Any


class ClientWeighting(enum.Enum):
  """How client updates are weighted in the server's average."""

  NUM_EXAMPLES = 'num_examples'
  UNIFORM = 'uniform'


def _client_weight(weighting, num_examples: jax.Array) -> jax.Array:
  if weighting is ClientWeighting.NUM_EXAMPLES:
    return num_examples
  if weighting is ClientWeighting.UNIFORM:
    return (num_examples > 0).astype(jnp.float32)
  return jnp.asarray(weighting(num_examples), jnp.float32)


def _build_fed_avg(
    model: Model,
    client_optimizer_fn,
    server_optimizer_fn,
    client_weighting,
    seed: int,
    name: str,
) -> LearningProcess:
  if not isinstance(model, Model):
    raise TypeError(
        'model must be a fedjax_like Model, e.g. fedjax_like.models.from_linen(module, input_spec); '
        f'got {type(model).__name__}.'
    )
  client_optimizer = optimizers.as_transformation(client_optimizer_fn, 'client_optimizer_fn')
  server_optimizer = optimizers.as_transformation(server_optimizer_fn, 'server_optimizer_fn')
  if not (isinstance(client_weighting, ClientWeighting) or callable(client_weighting)):
    raise TypeError(
        'client_weighting must be a ClientWeighting or a function num_examples -> weight; '
        f'got {client_weighting!r}.'
    )

  def initialize() -> LearningAlgorithmState:
    init_key, round_key = jax.random.split(jax.random.key(seed))
    weights = model.init_fn(init_key)
    return LearningAlgorithmState(
        global_model_weights=weights,
        distributor=(),
        client_work=jax.random.key_data(round_key),
        aggregator=(),
        finalizer=server_optimizer.init(weights.trainable),
    )

  def client_update(weights: ModelWeights, batches, mask, key):
    out = local_training(model, client_optimizer, weights, batches, mask, jax.random.wrap_key_data(key))
    finite = tree.all_finite(out.update)
    weight = jnp.where(finite, _client_weight(client_weighting, out.num_examples), 0.0)
    update = tree.where(finite, out.update, tree.zeros_like(out.update))
    return tree.scale(update, weight), weight, out.metric_sums, (~finite).astype(jnp.float32)

  def round_fn(state: LearningAlgorithmState, batches, mask):
    num_clients = mask.shape[0]
    round_key, next_key = jax.random.split(jax.random.wrap_key_data(state.client_work))
    client_keys = jax.random.key_data(jax.random.split(round_key, num_clients))

    weights_at_server = federated_value(state.global_model_weights, SERVER)
    weights_at_clients = federated_broadcast(weights_at_server)
    data = FederatedValue((batches, mask, client_keys), CLIENTS)
    outputs = federated_map(
        lambda w, d: client_update(w, *d), (weights_at_clients, data)
    )
    weighted_delta, total_weight, sums, non_finite = federated_sum(outputs).value

    safe = jnp.where(total_weight > 0, total_weight, 1.0)
    mean_delta = jax.tree.map(lambda x: x / safe.astype(x.dtype), weighted_delta)
    trainable = state.global_model_weights.trainable
    server_grad = jax.tree.map(jnp.negative, mean_delta)
    updates, finalizer_state = server_optimizer.update(server_grad, state.finalizer, trainable)
    new_trainable = optax.apply_updates(trainable, updates)

    new_state = state._replace(
        global_model_weights=state.global_model_weights._replace(trainable=new_trainable),
        client_work=jax.random.key_data(next_key),
        finalizer=finalizer_state,
    )
    train = model.finalize_metrics({k: v for k, v in sums.items() if k != 'num_batches'})
    train['num_batches'] = sums['num_batches'].astype(jnp.int32)
    metrics = {
        'distributor': {},
        'client_work': {'train': train},
        'aggregator': {
            'mean_weight': total_weight,
            'num_clients_non_finite': non_finite.astype(jnp.int32),
        },
        'finalizer': {'update_non_finite': (~tree.all_finite(mean_delta)).astype(jnp.int32)},
    }
    return new_state, metrics

  return LearningProcess(model, initialize, round_fn, name=name)


def build_weighted_fed_avg(
    model: Model,
    client_optimizer_fn,
    server_optimizer_fn=None,
    client_weighting: ClientWeighting | Callable = ClientWeighting.NUM_EXAMPLES,
    seed: int = 0,
) -> LearningProcess:
  """FedAvg with client updates weighted by example count (or ``client_weighting``).

  Args:
    model: a :class:`~fedjax_like.models.model.Model` (see ``models.from_linen`` / ``from_nnx``).
    client_optimizer_fn: the client optimizer, e.g. ``build_sgdm(learning_rate=0.1)``.
    server_optimizer_fn: the server optimizer (default ``build_sgdm(1.0)``: ``w + mean delta``);
      ``build_sgdm(1.0, momentum=0.9)`` gives FedAvgM, ``build_adam`` FedAdam.
    client_weighting: ``ClientWeighting.NUM_EXAMPLES`` (default), ``UNIFORM``, or a function
      ``num_examples -> weight`` (traced with JAX).
    seed: seeds the initial weights and per-round client keys.

  Returns:
    A :class:`~fedjax_like.learning.process.LearningProcess`.
  """
  server = server_optimizer_fn if server_optimizer_fn is not None else optimizers.build_sgdm(1.0)
  return _build_fed_avg(model, client_optimizer_fn, server, client_weighting, seed, 'weighted_fed_avg')


def build_unweighted_fed_avg(
    model: Model, client_optimizer_fn, server_optimizer_fn=None, seed: int = 0
) -> LearningProcess:
  """FedAvg with every client's update weighted equally (``p_i = 1``)."""
  server = server_optimizer_fn if server_optimizer_fn is not None else optimizers.build_sgdm(1.0)
  return _build_fed_avg(
      model, client_optimizer_fn, server, ClientWeighting.UNIFORM, seed, 'unweighted_fed_avg'
  )
