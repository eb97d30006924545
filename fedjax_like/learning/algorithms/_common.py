"""Shared checks and seeds for the algorithm builders."""

from __future__ import annotations

from typing import Any

import jax

from fedjax_like.aggregators.factory import tensor_type
from fedjax_like.aggregators.mean import MeanFactory, UnweightedMeanFactory
from fedjax_like.learning.client_weighting import ClientWeighting
from fedjax_like.models.model import Model, ModelWeights

PyTree = Any


def check_model(model) -> None:
  if not isinstance(model, Model):
    raise TypeError(
        'model must be a fedjax_like Model, e.g. fedjax_like.models.from_linen(module, '
        f'input_spec); got {type(model).__name__}.'
    )


def initial_weights_fn(model: Model, seed: int):
  """``() -> ModelWeights`` from ``fold_in(key(seed), 0)`` (client works use ``fold_in(.., 1)``)."""
  return lambda: model.init_fn(jax.random.fold_in(jax.random.key(seed), 0))


def weights_type(model: Model) -> ModelWeights:
  return tensor_type(jax.eval_shape(model.init_fn, jax.random.key(0)))


def default_aggregator(model_aggregator, client_weighting, builder: str = 'this builder'):
  """The given factory, else the weighted mean (the unweighted one for ``UNIFORM``).

  Raises:
    TypeError: an unweighted factory (e.g. ``DifferentiallyPrivateFactory``, unweighted as in TFF)
      given to a builder that weights its clients: it would silently drop the weights, so it is
      refused, as TFF's weighted builders refuse it, with the fix.
  """
  if model_aggregator is not None:
    weighted_clients = client_weighting is not ClientWeighting.UNIFORM
    if weighted_clients and getattr(model_aggregator, 'is_weighted', True) is False:
      raise TypeError(
          f'{builder} weights its clients (client_weighting={client_weighting}) but '
          f'model_aggregator {model_aggregator!r} is unweighted. Use the unweighted builder '
          '(e.g. build_unweighted_fed_avg) or client_weighting=ClientWeighting.UNIFORM, or pass '
          'a weighted aggregator (e.g. robust_aggregator(weighted=True)).'
      )
    return model_aggregator
  if client_weighting is ClientWeighting.UNIFORM:
    return UnweightedMeanFactory()
  return MeanFactory()
