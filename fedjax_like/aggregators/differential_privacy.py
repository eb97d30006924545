"""Differentially private aggregation: clipped sums with Gaussian noise (DP-FedAvg), as in TFF.

``DifferentiallyPrivateFactory`` is unweighted, as TFF's (a weighted learning builder refuses it
and says to use the unweighted one). Its two builders, for E = ``clients_per_round`` (the
*expected* number of clients, a constant: not the realized count) and noise multiplier z:

**gaussian_fixed(z, E, clip)** (McMahan et al. 2018, https://arxiv.org/abs/1710.06963):

    result = (sum_i clip(x_i, C) + N(0, (z C)^2 I)) / E

with ``clip(x, C) = x * C / max(||x||_2, C)`` over the whole pytree; the per-coordinate std of
the result is ``z C / E``.

**gaussian_adaptive(z, E, initial_l2_norm_clip=0.1, target_unclipped_quantile=0.5,
learning_rate=0.2, clipped_count_stddev=None)** (Andrew, Thakkar et al. 2021,
https://arxiv.org/abs/1905.03871): the clip ``C_t`` is a private quantile estimate of the norms.
The privacy budget z is split between the value and the clipped count (TFF's
``adaptive_clip_noise_params``):

    s_b = clipped_count_stddev, default 0.05 E (0 when z = 0)
    z_v = (z^-2 - (2 s_b)^-2)^(-1/2)         (a ValueError if z >= 2 s_b)
    result  = (sum_i clip(x_i, C_t) + N(0, (z_v C_t)^2 I)) / E
    b       = (sum_i (1[||x_i|| <= C_t] - 1/2) + N(0, s_b^2)) / E + 1/2, clipped to [0, 1]
    C_{t+1} = max(0, C_t exp(-lr (b - q)))

Measurements ``{dp_query_metrics: {}, dp: ()}`` (fixed) and ``{dp_query_metrics: {clip:
C_{t+1}}, dp: ()}`` (adaptive: the clip the *next* round uses, as TFF reports it).

**Noise** is added on the server, in the map-reduce ``report``, from ``state['noise_key']`` (raw
``uint32[2]``, split each round), and the quantile estimate's noise from its own key: a run is
reproducible from ``seed`` and resumes bit-exactly from a saved state. ``seed=None`` draws a fresh
seed from the OS. The client summands are the clipped values (and the count terms), so a learning
process fuses the whole aggregation into the round's one ``federated_sum``.

**Non-finite values** are zeroed (and are counted as above the clip by the quantile estimate);
TFF's ``tf.clip_by_global_norm`` turns them into NaN and poisons the sum.
"""

from __future__ import annotations

import secrets
import warnings
from typing import Any

import jax
import jax.numpy as jnp

from fedjax_like.aggregators.clipping import global_l2_norm
from fedjax_like.aggregators.factory import (
    AggregationProcess,
    MapReduceForm,
    MeasuredProcessOutput,
    build_map_reduce_aggregation,
    tensor_type,
)
from fedjax_like.aggregators.quantile_estimation import (
    PrivateQuantileEstimationProcess,
    check_nonnegative,
    check_positive,
    check_probability,
    seed_key,
)
from fedjax_like.core import tree

PyTree = Any
_F32 = jnp.float32


def adaptive_clip_noise_params(
    noise_multiplier: float,
    expected_clients_per_round: float,
    clipped_count_stddev: float | None = None,
) -> tuple[float, float]:
  """The value noise multiplier ``z_v`` and count stddev ``s_b`` for a total multiplier ``z``.

  TFF's function of the same name: ``s_b`` defaults to ``0.05 * E`` (0 when ``z = 0``) and
  ``z_v = (z^-2 - (2 s_b)^-2)^(-1/2)``, so the value and the count together spend ``z``.

  Raises:
    ValueError: when ``z >= 2 s_b`` (the count's noise alone would spend the budget).
  """
  if noise_multiplier > 0.0:
    if clipped_count_stddev is None:
      clipped_count_stddev = 0.05 * expected_clients_per_round
    if noise_multiplier >= 2 * clipped_count_stddev:
      raise ValueError(
          f'clipped_count_stddev = {clipped_count_stddev} (defaults to 0.05 * clients_per_round '
          f'if not specified) is too low to achieve the desired effective noise_multiplier '
          f'({noise_multiplier}): noise_multiplier must be below 2 * clipped_count_stddev. '
          'Increase clipped_count_stddev (or clients_per_round), or decrease noise_multiplier.'
      )
    value_noise_multiplier = (noise_multiplier**-2 - (2 * clipped_count_stddev) ** -2) ** -0.5
    if value_noise_multiplier / noise_multiplier >= 2:
      warnings.warn(
          f'A significant amount of noise ({value_noise_multiplier / noise_multiplier:.2f}x) has '
          'to be added to the values to achieve the desired effective noise_multiplier '
          f'({noise_multiplier}). Increase clipped_count_stddev or clients_per_round.',
          stacklevel=3,
      )
  else:
    if clipped_count_stddev is None:
      clipped_count_stddev = 0.0
    value_noise_multiplier = 0.0
  return value_noise_multiplier, clipped_count_stddev


def clip_for_dp(value: PyTree, clip) -> tuple[PyTree, jax.Array]:
  """``x * C / max(||x||_2, C)`` (``tf.clip_by_global_norm``); non-finite values become zeros.

  Returns:
    ``(clipped value, its global L2 norm before clipping, float32)``.
  """
  norm = global_l2_norm(value)
  finite = tree.all_finite(value)
  factor = jnp.where(finite, clip / jnp.maximum(norm, clip), 0.0)
  clipped = jax.tree.map(lambda x: jnp.where(finite, x * factor.astype(x.dtype), 0).astype(x.dtype),
                         value)
  return clipped, norm


def add_gaussian_noise(key: jax.Array, value: PyTree, stddev) -> PyTree:
  """``value + N(0, stddev^2)`` per coordinate, one independent key per leaf."""
  leaves, treedef = jax.tree.flatten(value)
  keys = jax.random.split(key, max(len(leaves), 1))
  noised = [
      (x + (stddev * jax.random.normal(k, x.shape, _F32)).astype(x.dtype)).astype(x.dtype)
      for x, k in zip(leaves, keys)
  ]
  return jax.tree.unflatten(treedef, noised)


def _check_float_value_type(value_type: PyTree) -> None:
  leaves = jax.tree.leaves(value_type)
  if not leaves or not all(jnp.issubdtype(x.dtype, jnp.floating) for x in leaves):
    raise TypeError(
        'DifferentiallyPrivateFactory adds Gaussian noise to floating-point values; got the value '
        f'type {value_type}.'
    )


class DifferentiallyPrivateFactory:
  """Clipped sums with Gaussian noise, normalized by ``clients_per_round`` (unweighted).

  Build it with :meth:`gaussian_fixed` or :meth:`gaussian_adaptive` (see the module docstring).
  """

  is_weighted = False

  def __init__(
      self,
      noise_multiplier: float,
      clients_per_round: float,
      clip: float | None = None,
      quantile: dict | None = None,
      seed: int | None = None,
      description: str = 'DifferentiallyPrivateFactory',
  ):
    # Private: use the builders. ``quantile`` holds the adaptive clip's parameters.
    self._noise_multiplier = noise_multiplier
    self._clients_per_round = clients_per_round
    self._clip = clip
    self._quantile = quantile
    self._seed = secrets.randbits(63) if seed is None else seed
    seed_key(self._seed)  # checks the seed's type
    self._description = description

  @classmethod
  def gaussian_fixed(
      cls,
      noise_multiplier: float,
      clients_per_round: float,
      clip: float,
      *,
      seed: int | None = None,
  ) -> DifferentiallyPrivateFactory:
    """Fixed clipping at ``clip`` and noise ``N(0, (noise_multiplier * clip)^2)`` on the sum.

    Args:
      noise_multiplier: ``z >= 0``.
      clients_per_round: ``E > 0``, the expected number of clients a round (the divisor).
      clip: ``C > 0``, the L2 norm each client's value is clipped to.
      seed: the noise key's seed (None: a fresh random seed).
    """
    z = check_nonnegative(noise_multiplier, 'noise_multiplier')
    e = check_positive(clients_per_round, 'clients_per_round')
    c = check_positive(clip, 'clip')
    return cls(z, e, clip=c, seed=seed,
               description=f'DifferentiallyPrivateFactory.gaussian_fixed({z}, {e}, {c})')

  @classmethod
  def gaussian_adaptive(
      cls,
      noise_multiplier: float,
      clients_per_round: float,
      initial_l2_norm_clip: float = 0.1,
      target_unclipped_quantile: float = 0.5,
      learning_rate: float = 0.2,
      clipped_count_stddev: float | None = None,
      *,
      seed: int | None = None,
  ) -> DifferentiallyPrivateFactory:
    """Adaptive clipping (a private quantile of the norms) and Gaussian noise (TFF's defaults).

    Args:
      noise_multiplier: ``z >= 0``, the effective total multiplier (value and count together).
      clients_per_round: ``E > 0``, the expected number of clients a round.
      initial_l2_norm_clip: ``C_0 > 0``.
      target_unclipped_quantile: ``q`` in [0, 1], the fraction of values left unclipped.
      learning_rate: ``lr >= 0`` of the geometric clip update.
      clipped_count_stddev: ``s_b >= 0`` (default ``0.05 * E``; 0 when ``z = 0``).
      seed: the noise keys' seed (None: a fresh random seed).

    Raises:
      ValueError: bad arguments, or ``z >= 2 s_b`` (see :func:`adaptive_clip_noise_params`).
    """
    z = check_nonnegative(noise_multiplier, 'noise_multiplier')
    e = check_positive(clients_per_round, 'clients_per_round')
    c0 = check_positive(initial_l2_norm_clip, 'initial_l2_norm_clip')
    q = check_probability(target_unclipped_quantile, 'target_unclipped_quantile')
    lr = check_nonnegative(learning_rate, 'learning_rate')
    if clipped_count_stddev is not None:
      clipped_count_stddev = check_nonnegative(clipped_count_stddev, 'clipped_count_stddev')
    value_z, count_stddev = adaptive_clip_noise_params(z, e, clipped_count_stddev)
    quantile = dict(initial_estimate=c0, target_quantile=q, learning_rate=lr,
                    below_estimate_stddev=count_stddev, expected_num_records=e)
    return cls(
        value_z, e, quantile=quantile, seed=seed,
        description=f'DifferentiallyPrivateFactory.gaussian_adaptive({z}, {e}, {c0}, {q}, {lr}, '
        f'{clipped_count_stddev})',
    )

  @property
  def value_noise_multiplier(self) -> float:
    """The multiplier of the noise actually added to the values (``z_v`` when adaptive)."""
    return self._noise_multiplier

  def __repr__(self) -> str:
    return self._description

  def create(self, value_type: PyTree) -> AggregationProcess:
    """The process for client values of ``value_type`` (a pytree of floating types)."""
    value_type = tensor_type(value_type)
    _check_float_value_type(value_type)
    key = jax.random.key_data(jax.random.fold_in(jax.random.key(self._seed), 1))
    if self._quantile is None:
      form, initialize = _fixed_form(self._noise_multiplier, self._clients_per_round, self._clip,
                                     key)
      name = 'dp_gaussian_fixed'
    else:
      estimator = PrivateQuantileEstimationProcess(**self._quantile, seed=self._seed)
      form, initialize = _adaptive_form(self._noise_multiplier, self._clients_per_round, estimator,
                                        key)
      name = 'dp_gaussian_adaptive'
    return build_map_reduce_aggregation(initialize, form, value_type, False, name)


def _noised_mean(state, summed, stddev, clients_per_round):
  next_key, noise_key = jax.random.split(jax.random.wrap_key_data(state['noise_key']))
  noised = add_gaussian_noise(noise_key, summed, stddev)
  mean = jax.tree.map(lambda x: (x / jnp.asarray(clients_per_round, x.dtype)).astype(x.dtype),
                      noised)
  return mean, jax.random.key_data(next_key)


def _fixed_clip(clip):
  """``(prepare, work)`` of a map-reduce form that sums client values clipped to a fixed L2 norm
  ``clip`` (weights ignored): ``prepare`` broadcasts the norm, ``work`` clips with
  :func:`clip_for_dp`."""

  def prepare(state):
    del state
    return jnp.asarray(clip, _F32)

  def work(clip_norm, value, weight):
    del weight
    return clip_for_dp(value, clip_norm)[0]

  return prepare, work


def _fixed_form(noise_multiplier, clients_per_round, clip, key):
  stddev = noise_multiplier * clip
  prepare, work = _fixed_clip(clip)

  def initialize():
    return {'noise_key': key}

  def report(state, summed):
    mean, next_key = _noised_mean(state, summed, jnp.asarray(stddev, _F32), clients_per_round)
    measurements = {'dp_query_metrics': {}, 'dp': ()}
    return MeasuredProcessOutput({'noise_key': next_key}, mean, measurements)

  return MapReduceForm(prepare, work, report), initialize


def _adaptive_form(value_noise_multiplier, clients_per_round, estimator, key):
  q_form = estimator.map_reduce

  def initialize():
    return {'quantile_estimator': estimator.initialize(), 'noise_key': key}

  def prepare(state):
    q_state = state['quantile_estimator']
    return estimator.report(q_state), q_form.prepare(q_state)

  def work(prepared, value, weight):
    del weight
    clip_norm, q_prepared = prepared
    clipped, norm = clip_for_dp(value, clip_norm)
    return clipped, q_form.work(q_prepared, norm)

  def report(state, summed):
    clipped_sum, q_summed = summed
    q_state = state['quantile_estimator']
    clip_norm = estimator.report(q_state)
    stddev = jnp.asarray(value_noise_multiplier, _F32) * clip_norm
    mean, next_key = _noised_mean(state, clipped_sum, stddev, clients_per_round)
    new_q_state = q_form.update(q_state, q_summed)
    new_clip = jnp.maximum(new_q_state['current_estimate'], 0.0)
    new_q_state = dict(new_q_state, current_estimate=new_clip)
    new_state = {'quantile_estimator': new_q_state, 'noise_key': next_key}
    measurements = {'dp_query_metrics': {'clip': new_clip}, 'dp': ()}
    return MeasuredProcessOutput(new_state, mean, measurements)

  return MapReduceForm(prepare, work, report), initialize
