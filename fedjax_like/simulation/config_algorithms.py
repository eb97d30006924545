"""The config sections that choose a learning algorithm's options and its aggregator.

``[aggregator]`` (:class:`AggregatorConfig`) picks the model update aggregator: the mean, TFF's
``robust_aggregator``, ``dp_aggregator`` (by noise multiplier or by a target epsilon, with its
privacy accounting) or ``secure_aggregator``. ``[fed_prox]`` and ``[fed_opt]`` hold the arguments
of those builders that the shared sections (``[client_optimizer]``, ``[server_optimizer]``,
``[training]``) do not, with the builders' defaults. :func:`check_algorithm_sections` checks their
ranges and combinations (part of ``load_config``'s validation); how they become a process is
:mod:`fedjax_like.simulation.processes`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from fedjax_like.simulation.config_files import ConfigError

#: The algorithms whose clients count equally (what an unweighted aggregator such as DP needs).
UNWEIGHTED_ALGORITHMS = (
    'fed_avg_unweighted', 'fed_prox_unweighted', 'mime_lite_unweighted', 'scaffold'
)


def _field(default: Any, help_text: str) -> Any:
  return dataclasses.field(default=default, metadata={'help': help_text})


@dataclasses.dataclass
class AggregatorConfig:
  kind: Literal['mean', 'robust', 'dp', 'secure', 'compression', 'median', 'trimmed_mean',
                'krum', 'geometric_median'] = _field(
      'mean',
      "'mean' (the algorithm's weighted or unweighted mean); 'robust' (TFF's robust_aggregator); "
      "'dp' (TFF's dp_aggregator: adaptive clipping and Gaussian noise, unweighted); 'secure' "
      "(TFF's secure_aggregator); 'compression' (TFF's compression_aggregator: 8-bit quantization "
      "of large tensors); 'median', 'trimmed_mean', 'krum', 'geometric_median' (robust to "
      'poisoning; unweighted, each holds every client\'s update).',
  )
  zeroing: bool = _field(True, 'robust, dp, secure: adaptive zeroing of very large updates.')
  clipping: bool = _field(True, 'robust, secure: adaptive L2 clipping.')
  noise_multiplier: float | None = _field(
      None, 'dp: the noise multiplier z (give it or target_epsilon).'
  )
  target_epsilon: float | None = _field(
      None,
      'dp: calibrate z so that training.num_rounds rounds spend this epsilon at delta (then '
      'num_rounds cannot change on resume).',
  )
  delta: float = _field(1e-5, 'dp: the delta epsilon is reported (and calibrated) at.')
  trim_fraction: float = _field(0.1, 'trimmed_mean: the fraction cut at each end, in [0, 0.5).')
  num_byzantine: int = _field(1, 'krum: f, the attackers tolerated (cohort > 2 f + 2).')
  num_selected: int = _field(1, 'krum: m, the best-scored updates averaged (1: Krum; > 1: Multi-Krum).')
  accountant: Literal['rdp', 'pld'] = _field(
      'rdp', "dp: 'rdp' (fast) or 'pld' (tighter; Poisson sampling only) accounting."
  )


@dataclasses.dataclass
class FedProxConfig:
  proximal_strength: float | None = _field(
      None, "fed_prox: mu >= 0, the proximal term's strength (required, as in TFF)."
  )


@dataclasses.dataclass
class FedOptConfig:
  server_learning_rate: float = _field(0.01, 'fed_adam, fed_yogi, fed_adagrad: server rate eta.')
  beta_1: float = _field(0.9, 'fed_adam, fed_yogi: first-moment decay.')
  beta_2: float = _field(0.99, 'fed_adam, fed_yogi: second-moment decay.')
  tau: float = _field(1e-3, 'fed_adam, fed_yogi, fed_adagrad: adaptivity tau (> 0).')


def check_algorithm_sections(config) -> None:
  """Ranges and combinations of [aggregator], [fed_prox] and [fed_opt]."""
  agg, algorithm = config.aggregator, config.training.algorithm
  if agg.kind == 'dp':
    if (agg.noise_multiplier is None) == (agg.target_epsilon is None):
      raise ConfigError(
          "aggregator.kind = 'dp': give exactly one of aggregator.noise_multiplier and "
          'aggregator.target_epsilon.'
      )
    if agg.noise_multiplier is not None and agg.noise_multiplier < 0:
      raise ConfigError(
          f'aggregator.noise_multiplier: expected a value >= 0, got {agg.noise_multiplier!r}.'
      )
    if agg.target_epsilon is not None and agg.target_epsilon <= 0:
      raise ConfigError(
          f'aggregator.target_epsilon: expected a value > 0, got {agg.target_epsilon!r}.'
      )
    if not 0 < agg.delta < 1:
      raise ConfigError(f'aggregator.delta: expected a value in (0, 1), got {agg.delta!r}.')
    if algorithm not in UNWEIGHTED_ALGORITHMS:
      raise ConfigError(
          f"aggregator.kind = 'dp' is unweighted (as TFF's dp_aggregator), but training.algorithm "
          f"= '{algorithm}' weights clients by examples. Use one of "
          f'{", ".join(repr(a) for a in UNWEIGHTED_ALGORITHMS)} (DP-FedAdam: '
          "'fed_avg_unweighted' with server_optimizer.name = 'adam')."
      )
  elif agg.noise_multiplier is not None or agg.target_epsilon is not None:
    raise ConfigError(
        f"aggregator.noise_multiplier / target_epsilon apply to aggregator.kind = 'dp', not "
        f"'{agg.kind}'."
    )
  if algorithm.startswith('fed_prox'):
    mu = config.fed_prox.proximal_strength
    if mu is None or mu < 0:
      raise ConfigError(
          f"fed_prox.proximal_strength: training.algorithm = '{algorithm}' needs mu >= 0 (e.g. "
          f'0.01); got {mu!r}.'
      )
  opt = config.fed_opt
  betas = 0 <= opt.beta_1 < 1 and 0 <= opt.beta_2 < 1
  if opt.server_learning_rate < 0 or opt.tau <= 0 or not betas:
    raise ConfigError(
        'fed_opt: expected server_learning_rate >= 0, tau > 0 and beta_1, beta_2 in [0, 1); got '
        f'{opt}.'
    )

