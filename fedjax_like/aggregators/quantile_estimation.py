"""Private quantile estimation: an adaptive norm that tracks a quantile of the clients' norms.

``PrivateQuantileEstimationProcess`` is TFF's estimation process of the same name, with the
update of tensorflow_privacy's ``QuantileEstimatorQuery`` (Andrew, Thakkar et al. 2021,
"Differentially Private Learning with Adaptive Clipping", https://arxiv.org/abs/1905.03871).
With the estimate ``C_t`` sent to every client, round ``t`` computes

    r_i = 1[x_i <= C_t] - 1/2                          (each client; x_i its norm)
    b   = sum_i r_i / n + 1/2                          (no noise: n the clients that took part)
    b   = (sum_i r_i + N(0, s_b^2)) / E + 1/2          (private: E the expected clients a round)
    b   <- min(1, max(0, b))
    C_{t+1} = C_t * exp(-lr (b - q))                   (geometric update, the default)
    C_{t+1} = C_t - lr (b - q)                         (arithmetic, ``geometric_update=False``)

all in float32. The shift by 1/2 halves the sensitivity of the count (each ``r_i`` is +-1/2), as
the paper notes. ``report`` gives ``C_t``; ``.no_noise(..., multiplier, increment)`` reports
``multiplier * C_t + increment`` but still compares norms with ``C_t`` itself.

A round in which no client took part leaves the estimate unchanged (TFF's no-noise average
divides 0 by 0 and gives NaN).

The noise of the private form comes from a key in the state (``state['noise_key']``, raw
``uint32[2]``), split every round: a run is reproducible from ``seed`` and resumes bit-exactly from
a saved state.

In map-reduce form (client work ``(r_i, 1)``), so clipping and zeroing fold it into their own work
and the round's one ``federated_sum``.
"""

from __future__ import annotations

import math
import secrets

import jax
import jax.numpy as jnp

from fedjax_like.aggregators.estimation import (
    EstimationMapReduceForm,
    EstimationProcess,
    build_map_reduce_estimation,
)

_F32 = jnp.float32


def _check_number(value, label: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise TypeError(f'{label} must be a float; got {type(value).__name__} {value!r}.')
  if not math.isfinite(value):
    raise ValueError(f'{label} must be finite; got {value}.')
  return float(value)


def check_positive(value, label: str) -> float:
  """``float(value)``, or a ValueError when it is not a finite positive number."""
  value = _check_number(value, label)
  if value <= 0:
    raise ValueError(f'{label} must be positive; got {value}.')
  return value


def check_nonnegative(value, label: str) -> float:
  """``float(value)``, or a ValueError when it is negative (or not a finite number)."""
  value = _check_number(value, label)
  if value < 0:
    raise ValueError(f'{label} must be nonnegative; got {value}.')
  return value


def check_probability(value, label: str) -> float:
  """``float(value)``, or a ValueError when it is outside [0, 1]."""
  value = _check_number(value, label)
  if not 0.0 <= value <= 1.0:
    raise ValueError(f'{label} must be between 0 and 1 (inclusive); got {value}.')
  return value


def seed_key(seed: int | None) -> jax.Array:
  """Raw ``uint32[2]`` key data for ``seed`` (a fresh OS-random seed when None)."""
  if seed is None:
    seed = secrets.randbits(63)
  if isinstance(seed, bool) or not isinstance(seed, int):
    raise TypeError(f'seed must be an int or None; got {type(seed).__name__}.')
  return jax.random.key_data(jax.random.key(seed))


def quantile_update(estimate, below_fraction, target_quantile: float, learning_rate: float,
                    geometric_update: bool = True):
  """``C <- C exp(-lr (b - q))`` (or ``C - lr (b - q)``), ``b`` clipped to [0, 1] first."""
  b = jnp.clip(jnp.asarray(below_fraction, _F32), 0.0, 1.0)
  step = jnp.asarray(learning_rate, _F32) * (b - jnp.asarray(target_quantile, _F32))
  if geometric_update:
    return (estimate * jnp.exp(-step)).astype(_F32)
  return (estimate - step).astype(_F32)


class PrivateQuantileEstimationProcess(EstimationProcess):
  """Estimates the ``target_quantile`` of the clients' values (``tff.aggregators``' class).

  Args:
    initial_estimate: the estimate ``C_0`` (positive).
    target_quantile: ``q`` in [0, 1], the fraction of values that should be ``<= C``.
    learning_rate: ``lr >= 0``; with the geometric update ``C`` changes by at most a factor
      ``exp(lr)`` a round.
    below_estimate_stddev: ``s_b``, the std of the Gaussian noise on the sum of ``r_i``; None (no
      noise) divides by the realized number of clients instead of ``expected_num_records``.
    expected_num_records: ``E``, the expected number of clients a round (needed with noise).
    geometric_update: the geometric update (True, TFF's and the paper's recommendation) or the
      arithmetic one.
    seed: the seed of the noise key (None: a fresh random seed); unused without noise.

  State: ``{'current_estimate': float32}`` (and ``'noise_key'`` with noise).
  """

  def __init__(
      self,
      initial_estimate: float,
      target_quantile: float,
      learning_rate: float,
      below_estimate_stddev: float | None = None,
      expected_num_records: float | None = None,
      geometric_update: bool = True,
      seed: int | None = None,
  ):
    initial = check_positive(initial_estimate, 'initial_estimate')
    q = check_probability(target_quantile, 'target_quantile')
    lr = check_nonnegative(learning_rate, 'learning_rate')
    noised = below_estimate_stddev is not None
    if noised:
      stddev = check_nonnegative(below_estimate_stddev, 'below_estimate_stddev')
      if expected_num_records is None:
        raise ValueError(
            'A private quantile estimate (below_estimate_stddev given) divides the noised count '
            'by expected_num_records: pass the expected number of clients per round.'
        )
      expected = check_positive(expected_num_records, 'expected_num_records')
      key = seed_key(seed)
    self.initial_estimate, self.target_quantile, self.learning_rate = initial, q, lr
    self.below_estimate_stddev = below_estimate_stddev
    self.expected_num_records = expected_num_records
    self.geometric_update = bool(geometric_update)

    def initialize():
      state = {'current_estimate': jnp.asarray(initial, _F32)}
      if noised:
        state['noise_key'] = key
      return state

    def prepare(state):
      return state['current_estimate']

    def work(estimate, value):
      below = (jnp.asarray(value, _F32) <= estimate).astype(_F32) - 0.5
      return below, jnp.ones((), _F32)

    def update(state, summed):
      below_sum, count = summed
      estimate = state['current_estimate']
      new_state = dict(state)
      if noised:
        next_key, noise_key = jax.random.split(jax.random.wrap_key_data(state['noise_key']))
        noise = jnp.asarray(stddev, _F32) * jax.random.normal(noise_key, (), _F32)
        fraction = (below_sum + noise) / jnp.asarray(expected, _F32) + 0.5
        new_state['current_estimate'] = quantile_update(estimate, fraction, q, lr,
                                                        self.geometric_update)
        new_state['noise_key'] = jax.random.key_data(next_key)
      else:
        fraction = below_sum / jnp.maximum(count, 1.0) + 0.5
        moved = quantile_update(estimate, fraction, q, lr, self.geometric_update)
        new_state['current_estimate'] = jnp.where(count > 0, moved, estimate)
      return new_state

    process = build_map_reduce_estimation(
        initialize,
        EstimationMapReduceForm(prepare, work, update),
        lambda state: state['current_estimate'],
        'private_quantile_estimation' if noised else 'quantile_estimation',
    )
    super().__init__(process.initialize, process.next, process.report, process.map_reduce,
                     process.name)

  @classmethod
  def no_noise(
      cls,
      initial_estimate: float,
      target_quantile: float,
      learning_rate: float,
      multiplier: float = 1.0,
      increment: float = 0.0,
  ) -> EstimationProcess:
    """The noise-free estimate of ``C``, reported as ``multiplier * C + increment`` (TFF's).

    Not differentially private; for adaptive clipping and zeroing where privacy is not needed.

    Args:
      initial_estimate: ``C_0`` (positive).
      target_quantile: ``q`` in [0, 1].
      learning_rate: ``lr`` (positive).
      multiplier: ``r`` (positive) of the reported ``r C + i``.
      increment: ``i`` (nonnegative) of the reported ``r C + i``.
    """
    check_positive(learning_rate, 'learning_rate')
    r = check_positive(multiplier, 'multiplier')
    i = check_nonnegative(increment, 'increment')
    quantile = cls(initial_estimate, target_quantile, learning_rate, geometric_update=True)
    if r == 1.0 and i == 0.0:
      return quantile
    mapped = quantile.map(lambda c: (jnp.asarray(r, _F32) * c + jnp.asarray(i, _F32)).astype(_F32))
    mapped.name = f'quantile_estimation*{r}+{i}'
    return mapped

  def __repr__(self) -> str:
    return (
        f'PrivateQuantileEstimationProcess(initial_estimate={self.initial_estimate}, '
        f'target_quantile={self.target_quantile}, learning_rate={self.learning_rate}, '
        f'below_estimate_stddev={self.below_estimate_stddev})'
    )
