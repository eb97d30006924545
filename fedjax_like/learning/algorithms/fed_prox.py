"""FedProx (Li et al., 2020, "Federated Optimization in Heterogeneous Networks").

Each client minimizes its loss plus a proximal pull toward the broadcast weights ``w``:

    min_v  F_i(v) + (mu/2) ||v - w||^2

approximately, by its local optimizer with every step's gradient replaced by

    g + mu (v - w)                 (v: the client's current weights, g: the batch gradient)

then the round is FedAvg's: ``u_i = w - v_i``, ``u = sum_i p_i u_i / sum_i p_i``,
``w' = ServerOptimizer.step(w, gradient=u)``. ``mu = 0`` is FedAvg exactly. As in TFF, the proximal
term is added to the gradient (not to the reported loss), so
``metrics['client_work']['train']['loss']`` is the model's loss.

Composition: broadcast, ``proximal`` client work
(:func:`~fedjax_like.learning.templates.build_model_delta_client_work` with ``proximal_strength``),
mean aggregator, ``apply_optimizer`` finalizer.
"""

from __future__ import annotations

from collections.abc import Callable

from fedjax_like.learning.algorithms.fed_avg import build_fed_avg
from fedjax_like.learning.client_weighting import ClientWeighting
from fedjax_like.learning.process import LearningProcess
from fedjax_like.models.model import Model


def _check_strength(proximal_strength) -> None:
  if not (isinstance(proximal_strength, (int, float)) and proximal_strength >= 0):
    raise ValueError(f'proximal_strength (mu) must be a number >= 0; got {proximal_strength!r}.')


def build_weighted_fed_prox(
    model: Model,
    proximal_strength: float,
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
  """FedProx with proximal strength ``mu``, updates weighted by example count.

  Arguments are :func:`~fedjax_like.learning.algorithms.build_weighted_fed_avg`'s plus
  ``proximal_strength`` (mu >= 0).
  """
  _check_strength(proximal_strength)
  return build_fed_avg(
      model, client_optimizer_fn, server_optimizer_fn, client_weighting, model_distributor,
      model_aggregator, client_learning_rate_fn, server_learning_rate_fn,
      proximal_strength=float(proximal_strength), seed=seed, name='weighted_fed_prox',
      runtime=runtime,
  )


def build_unweighted_fed_prox(
    model: Model,
    proximal_strength: float,
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
  """FedProx with every client weighted equally."""
  _check_strength(proximal_strength)
  return build_fed_avg(
      model, client_optimizer_fn, server_optimizer_fn, ClientWeighting.UNIFORM, model_distributor,
      model_aggregator, client_learning_rate_fn, server_learning_rate_fn,
      proximal_strength=float(proximal_strength), seed=seed, name='unweighted_fed_prox',
      runtime=runtime,
  )
