"""The FedOpt family: FedAdam, FedYogi, FedAdagrad (Reddi et al., 2021, "Adaptive Federated
Optimization", ICLR; arXiv:2003.00295, Algorithm 2).

Clients run FedAvg's local training; the server treats the averaged model change
``Delta_t = -u = sum_i p_i (w_i - w) / sum_i p_i`` as a pseudo-gradient step and applies an adaptive
optimizer to it (no bias correction, as in the paper):

    m_t = beta_1 m_{t-1} + (1 - beta_1) Delta_t
    v_t = v_{t-1} + Delta_t^2                                        (FedAdagrad)
    v_t = v_{t-1} - (1 - beta_2) Delta_t^2 sign(v_{t-1} - Delta_t^2)  (FedYogi)
    v_t = beta_2 v_{t-1} + (1 - beta_2) Delta_t^2                    (FedAdam)
    w_{t+1} = w_t + eta m_t / (sqrt(v_t) + tau)

with ``m_{-1} = 0`` and ``v_{-1} = initial_accumulator_value`` (default ``tau^2``, the paper's
``v_{-1} >= tau^2``). Defaults follow the paper's experiments: ``beta_1 = 0.9``, ``beta_2 = 0.99``,
``tau = 1e-3``; ``eta`` (``server_learning_rate``) must be tuned (the paper searches 10^-3 .. 10^1).

The server optimizers are optax transformations (:func:`build_fedopt_server_optimizer`), so they
also plug into any algorithm's ``server_optimizer_fn``; TFF's bias-corrected ``build_adam`` /
``build_yogi`` / ``build_adagrad`` remain available for ``build_weighted_fed_avg``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_like.learning.algorithms.fed_avg import build_fed_avg
from fedjax_like.learning.client_weighting import ClientWeighting
from fedjax_like.learning.process import LearningProcess
from fedjax_like.models.model import Model

VARIANTS = ('adam', 'yogi', 'adagrad')


class FedOptState(NamedTuple):
  """First and second moment estimates ``(m, v)``, shaped as the trainable weights."""

  m: optax.Updates
  v: optax.Updates


def build_fedopt_server_optimizer(
    variant: str,
    learning_rate: float = 0.01,
    beta_1: float = 0.9,
    beta_2: float = 0.99,
    tau: float = 1e-3,
    initial_accumulator_value: float | None = None,
) -> optax.GradientTransformation:
  """Reddi et al.'s server optimizer ``variant`` in ``('adam', 'yogi', 'adagrad')``.

  It takes the pseudo-gradient ``g = -Delta`` (what the finalizer passes) and returns the update
  ``-eta m / (sqrt(v) + tau)`` with ``m`` the momentum of ``g`` (``v`` only sees ``g^2``).
  """
  if variant not in VARIANTS:
    raise ValueError(f'variant must be one of {VARIANTS}; got {variant!r}.')
  if not isinstance(learning_rate, jax.Array) and not learning_rate >= 0:
    raise ValueError(f'learning_rate must be >= 0; got {learning_rate!r}.')
  if not tau > 0:
    raise ValueError(f'tau must be > 0; got {tau!r}.')
  v0 = tau**2 if initial_accumulator_value is None else initial_accumulator_value

  def init(params):
    return FedOptState(
        jax.tree.map(jnp.zeros_like, params), jax.tree.map(lambda p: jnp.full_like(p, v0), params)
    )

  def second_moment(v, g):
    g2 = jnp.square(g)
    if variant == 'adagrad':
      return v + g2
    if variant == 'yogi':
      return v - (1.0 - beta_2) * g2 * jnp.sign(v - g2)
    return beta_2 * v + (1.0 - beta_2) * g2

  def update(grads, state, params=None):
    del params
    m = jax.tree.map(lambda m, g: beta_1 * m + (1.0 - beta_1) * g, state.m, grads)
    v = jax.tree.map(second_moment, state.v, grads)
    updates = jax.tree.map(lambda m, v: -learning_rate * m / (jnp.sqrt(v) + tau), m, v)
    return updates, FedOptState(m, v)

  return optax.GradientTransformation(init, update)


def build_fed_opt(
    model: Model,
    variant: str,
    client_optimizer_fn,
    server_learning_rate: float = 0.01,
    beta_1: float = 0.9,
    beta_2: float = 0.99,
    tau: float = 1e-3,
    client_weighting: ClientWeighting | Callable = ClientWeighting.NUM_EXAMPLES,
    model_distributor=None,
    model_aggregator=None,
    client_learning_rate_fn: Callable | None = None,
    server_learning_rate_fn: Callable | None = None,
    seed: int = 0,
    *,
    runtime=None,
) -> LearningProcess:
  """FedAvg's clients with Reddi et al.'s adaptive server optimizer ``variant``.

  ``server_learning_rate_fn`` (``round_num -> eta``) replaces ``server_learning_rate`` when given.
  Other arguments as :func:`~fedjax_like.learning.algorithms.build_weighted_fed_avg`.
  """

  def server(learning_rate):
    return build_fedopt_server_optimizer(variant, learning_rate, beta_1, beta_2, tau)

  server_optimizer = server if server_learning_rate_fn is not None else server(server_learning_rate)
  return build_fed_avg(
      model, client_optimizer_fn, server_optimizer, client_weighting, model_distributor,
      model_aggregator, client_learning_rate_fn, server_learning_rate_fn, seed=seed,
      name=f'fed_{variant}', runtime=runtime,
  )


def build_fed_adam(model: Model, client_optimizer_fn, server_learning_rate: float = 0.01,
                   **kwargs) -> LearningProcess:
  """FedAdam: :func:`build_fed_opt` with ``variant='adam'``."""
  return build_fed_opt(model, 'adam', client_optimizer_fn, server_learning_rate, **kwargs)


def build_fed_yogi(model: Model, client_optimizer_fn, server_learning_rate: float = 0.01,
                   **kwargs) -> LearningProcess:
  """FedYogi: :func:`build_fed_opt` with ``variant='yogi'``."""
  return build_fed_opt(model, 'yogi', client_optimizer_fn, server_learning_rate, **kwargs)


def build_fed_adagrad(model: Model, client_optimizer_fn, server_learning_rate: float = 0.01,
                      **kwargs) -> LearningProcess:
  """FedAdagrad: :func:`build_fed_opt` with ``variant='adagrad'``."""
  return build_fed_opt(model, 'adagrad', client_optimizer_fn, server_learning_rate, **kwargs)
