"""The learning process a config names: its algorithm, its aggregator and, for DP, its accountant.

:func:`build_process` maps ``training.algorithm`` to the library's builder, passing the shared
sections (``[client_optimizer]``, ``[server_optimizer]``) and the algorithm's own (``[fed_prox]``,
``[fed_opt]``), and ``[aggregator]`` to a ``model_aggregator`` through :data:`AGGREGATORS`, a
table ``kind -> (factory builder, needs unweighted clients)``; a new aggregator is one entry
there and one name in ``AggregatorConfig.kind``.

With ``aggregator.kind = 'dp'`` the aggregator is TFF's ``dp_aggregator(z, clients_per_round,
zeroing)``: its divisor is ``training.clients_per_round``, the *expected* cohort, which is what
Poisson sampling with ``q = clients_per_round / population`` draws on average (and exactly the
cohort of the fixed-size samplers). ``z`` is ``aggregator.noise_multiplier``, or calibrated
(:func:`~fedjax_like.learning.privacy_accounting.noise_multiplier_for_epsilon`, tolerance 1e-3)
so that ``training.num_rounds`` rounds spend ``aggregator.target_epsilon`` at
``aggregator.delta`` under the run's sampler. :func:`build_accountant` gives the accountant whose
epsilon the driver reports each round (``privacy/epsilon``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from fedjax_like import aggregators
from fedjax_like.learning import algorithms
from fedjax_like.learning.model_update_aggregator import (
    compression_aggregator,
    dp_aggregator,
    robust_aggregator,
    secure_aggregator,
)
from fedjax_like.learning.process import LearningProcess
from fedjax_like.models.model import Model
from fedjax_like.simulation.config import ConfigError, ExperimentConfig
from fedjax_like.simulation.config_algorithms import UNWEIGHTED_ALGORITHMS

# Calibration's bisection width on the noise multiplier (absolute).
CALIBRATION_TOLERANCE = 1e-3


@dataclasses.dataclass(frozen=True)
class AggregatorContext:
  """What an aggregator's builder may need besides its own config section."""

  weighted: bool  # the algorithm weights clients by examples
  clients_per_round: int  # the expected cohort
  noise_multiplier: float | None  # dp: z (given or calibrated)
  seed: int


def _dp(agg, ctx: AggregatorContext):
  return dp_aggregator(ctx.noise_multiplier, ctx.clients_per_round, agg.zeroing, seed=ctx.seed)


# kind -> (config section and context -> aggregation factory or None (the algorithm's mean),
#          whether the factory needs an unweighted algorithm)
AGGREGATORS: dict[str, tuple[Callable[[Any, AggregatorContext], Any], bool]] = {
    'mean': (lambda agg, ctx: None, False),
    'robust': (lambda agg, ctx: robust_aggregator(
        zeroing=agg.zeroing, clipping=agg.clipping, weighted=ctx.weighted), False),
    'dp': (_dp, True),
    'secure': (lambda agg, ctx: secure_aggregator(
        zeroing=agg.zeroing, clipping=agg.clipping, weighted=ctx.weighted), False),
    'compression': (lambda agg, ctx: compression_aggregator(
        zeroing=agg.zeroing, clipping=agg.clipping, weighted=ctx.weighted, seed=ctx.seed), False),
    # Not sums: they hold every client's update (memory O(cohort x model)); unweighted.
    'median': (lambda agg, ctx: aggregators.MedianFactory(), True),
    'trimmed_mean': (lambda agg, ctx: aggregators.TrimmedMeanFactory(agg.trim_fraction), True),
    'krum': (lambda agg, ctx: aggregators.KrumFactory(agg.num_byzantine, agg.num_selected), True),
    'geometric_median': (lambda agg, ctx: aggregators.GeometricMedianFactory(weighted=False), True),
}


def build_accountant(config: ExperimentConfig, sampler, noise_multiplier: float):
  """The :class:`~fedjax_like.learning.privacy_accounting.PrivacyAccountant` of a DP run.

  Raises:
    ConfigError: the sampler has no privacy analysis, or the accountant cannot account it.
  """
  from fedjax_like.learning import privacy_accounting

  agg = config.aggregator
  try:
    return privacy_accounting.PrivacyAccountant.for_sampler(
        sampler, noise_multiplier, float(agg.delta), agg.accountant
    )
  except privacy_accounting.UnsupportedAccountingError as e:
    raise ConfigError(
        f"aggregator.kind = 'dp' with training.sampling = '{config.training.sampling}' and "
        f"aggregator.accountant = '{agg.accountant}': {e} (training.sampling = 'poisson' is the "
        'sampling DP-FedAvg is analysed for.)'
    ) from e


def dp_noise_multiplier(config: ExperimentConfig, sampler) -> float:
  """``aggregator.noise_multiplier``, or the one calibrated for ``aggregator.target_epsilon``."""
  agg = config.aggregator
  if agg.noise_multiplier is not None:
    return float(agg.noise_multiplier)
  from fedjax_like.learning.privacy_accounting import noise_multiplier_for_epsilon

  plan = build_accountant(config, sampler, 1.0).sampling  # checks the sampler is accountable
  try:
    return noise_multiplier_for_epsilon(
        agg.target_epsilon, float(agg.delta), config.training.num_rounds,
        plan.clients_per_round, plan.population, sampling=plan.kind,
        max_cohort_size=plan.max_cohort_size, method=agg.accountant,
        tolerance=CALIBRATION_TOLERANCE,
    )
  except ValueError as e:
    raise ConfigError(f'aggregator.target_epsilon = {agg.target_epsilon}: {e}') from e


def build_aggregator(config: ExperimentConfig, noise_multiplier: float | None):
  """The ``model_aggregator`` ``[aggregator]`` names (None: the algorithm's own mean)."""
  agg, algorithm = config.aggregator, config.training.algorithm
  builder, needs_unweighted = AGGREGATORS[agg.kind]
  weighted = algorithm not in UNWEIGHTED_ALGORITHMS
  if needs_unweighted and weighted:
    raise ConfigError(
        f"aggregator.kind = '{agg.kind}' is unweighted but training.algorithm = '{algorithm}' "
        f'weights clients; use one of {", ".join(UNWEIGHTED_ALGORITHMS)}.'
    )
  context = AggregatorContext(weighted, config.training.clients_per_round, noise_multiplier,
                              config.seed)
  try:
    return builder(agg, context)
  except ValueError as e:
    raise ConfigError(f"aggregator.kind = '{agg.kind}': {e}") from e


def build_process(
    config: ExperimentConfig,
    model: Model,
    population: int,
    build_optimizer: Callable,
    model_aggregator=None,
) -> LearningProcess:
  """The learning process of ``training.algorithm`` with ``model_aggregator``.

  Args:
    config: the experiment config.
    model: the model.
    population: the number of training clients (SCAFFOLD's ``num_total_clients``).
    build_optimizer: ``OptimizerConfig -> optax transformation``.
    model_aggregator: from :func:`build_aggregator` (None: the algorithm's default mean).
  """
  name = config.training.algorithm
  client = build_optimizer(config.client_optimizer)
  server = build_optimizer(config.server_optimizer)
  common = dict(model_aggregator=model_aggregator, seed=config.seed)
  if name in ('fed_avg', 'fed_avg_unweighted'):
    builder = (algorithms.build_weighted_fed_avg if name == 'fed_avg'
               else algorithms.build_unweighted_fed_avg)
    return builder(model, client, server, **common)
  if name in ('fed_prox', 'fed_prox_unweighted'):
    builder = (algorithms.build_weighted_fed_prox if name == 'fed_prox'
               else algorithms.build_unweighted_fed_prox)
    return builder(model, config.fed_prox.proximal_strength, client, server, **common)
  if name in ('fed_adam', 'fed_yogi', 'fed_adagrad'):
    opt = config.fed_opt
    return algorithms.build_fed_opt(
        model, name[len('fed_'):], client, opt.server_learning_rate, opt.beta_1, opt.beta_2,
        opt.tau, **common,
    )
  if name == 'fed_sgd':
    return algorithms.build_fed_sgd(model, server, **common)
  if name == 'scaffold':
    client_opt = config.client_optimizer
    if client_opt.name != 'sgd' or client_opt.momentum:
      raise ConfigError(
          "training.algorithm = 'scaffold' trains clients with plain SGD at "
          "client_optimizer.learning_rate; set client_optimizer.name = 'sgd' and momentum = 0 "
          f"(got '{client_opt.name}', momentum {client_opt.momentum})."
      )
    return algorithms.build_scaffold(
        model, client_opt.learning_rate, population, server_optimizer_fn=server, **common
    )
  if name in ('mime_lite', 'mime_lite_unweighted'):
    builder = (algorithms.build_weighted_mime_lite if name == 'mime_lite'
               else algorithms.build_unweighted_mime_lite)
    return builder(model, client, server, **common)
  raise ConfigError(f'training.algorithm: unknown algorithm {name!r}.')  # pragma: no cover
