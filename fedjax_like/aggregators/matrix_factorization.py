"""DP-FTRL by banded matrix factorization: clipped sums with noise correlated across rounds.

``BandedMatrixFactorizationFactory`` is DP-FedAvg's clipped sum with the independent Gaussian
noise of ``DifferentiallyPrivateFactory.gaussian_fixed`` replaced by *correlated* noise: the
matrix-factorization mechanism of DP-FTRL (Kairouz et al. 2021,
https://arxiv.org/abs/2103.00039; Choquette-Choo et al. 2023, "(Amplified) Banded Matrix
Factorization", https://arxiv.org/abs/2306.08153), with the noise from ``jax-privacy``'s
``matrix_factorization_privatizer`` over a ``ColumnNormalizedBanded`` strategy. Round ``t``
(0-based) returns, for ``E = clients_per_round``, clip ``C`` and noise multiplier ``z``:

    result_t = (sum_i clip(x_{i,t}, C) + z C (B^{-1} W)_t) / E

where ``W`` has i.i.d. standard normal rows (one per round, each the shape of the value) and
``B`` is the strategy: a lower-triangular ``num_rounds x num_rounds`` matrix with ``num_bands``
bands and unit-norm columns (by default the Toeplitz coefficients of Fichtenberger et al. 2023,
``c_k = prod_{j<=k} (2j - 1) / 2j``, truncated and column-normalized). A server taking SGD steps
on these results releases the prefix sums ``A (G + z C B^{-1} W)`` of the updates ``G``; since
``B (G + z C B^{-1} W) = B G + z C W``, the whole run is **one Gaussian mechanism** on ``B G``.
``num_bands = 1`` is the identity: independent noise, exactly ``gaussian_fixed``'s.

**Privacy.** If every client trains in at most ``k`` rounds, any two of them at least
``num_bands`` rounds apart, the columns a client touches are disjoint in support, the
sensitivity of ``B G`` is ``C sqrt(k)``, and the run is ``GaussianDpEvent(z / sqrt(k))``
(:meth:`BandedMatrixFactorizationFactory.dp_event`). The factory cannot see the participation
pattern: it is the sampler's promise (e.g. clients split into ``num_bands`` groups, round ``t``
drawing from group ``t mod num_bands``, each client at most ``k`` times). Ordinary uniform or
Poisson sampling gives no separation, and then this guarantee does not hold.

**State and reproducibility.** The noise state (a raw ``uint32[2]`` key, the round index and the
last ``num_bands`` noise rows per leaf, ``num_bands x`` the model's size) is the aggregator's
state: a run is reproducible from ``seed`` and resumes bit-exactly. The strategy is built for
``num_rounds`` rounds; a round beyond them returns NaN (which the finalizer reports and skips)
rather than noise the analysis does not cover.

Unweighted (like ``DifferentiallyPrivateFactory``), a sum (fused into the round's one pass).
Needs ``jax-privacy`` (``pip install 'fedjax_like[dpftrl]'``, Python >= 3.11).
"""

from __future__ import annotations

import math
import secrets
from typing import Any

import jax
import jax.numpy as jnp

from fedjax_like.aggregators.differential_privacy import _fixed_clip
from fedjax_like.aggregators.factory import (
    AggregationProcess,
    MapReduceForm,
    MeasuredProcessOutput,
    build_map_reduce_aggregation,
    tensor_type,
)
from fedjax_like.aggregators.quantile_estimation import (
    check_nonnegative,
    check_positive,
    seed_key,
)

PyTree = Any


def _jax_privacy():
  try:
    from jax_privacy import noise_addition
    from jax_privacy.matrix_factorization import banded
  except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "DP-FTRL's banded matrix factorization needs jax-privacy (Python >= 3.11): "
        "pip install 'fedjax_like[dpftrl]'."
    ) from e
  return noise_addition, banded


class BandedMatrixFactorizationFactory:
  """Clipped sums with banded-matrix-factorization noise, over ``clients_per_round``.

  Args:
    noise_multiplier: ``z >= 0``: the stddev of the i.i.d. noise ``W`` over the clip.
    clients_per_round: ``E > 0``, the expected number of clients a round (the divisor).
    l2_norm_clip: ``C > 0``, the L2 norm each client's value is clipped to.
    num_rounds: ``n``, the rounds the strategy covers (the run's length).
    num_bands: ``b`` in ``[1, n]``: the strategy's bands (1: independent noise).
    strategy: a ``jax_privacy.matrix_factorization.banded.ColumnNormalizedBanded`` with ``n``
      rows and ``b`` bands (e.g. from ``banded.optimize``), instead of the default one.
    seed: the noise key's seed (None: a fresh random seed).
  """

  is_weighted = False

  def __init__(
      self,
      noise_multiplier: float,
      clients_per_round: float,
      l2_norm_clip: float,
      num_rounds: int,
      num_bands: int = 1,
      *,
      strategy=None,
      seed: int | None = None,
  ):
    self.noise_multiplier = check_nonnegative(noise_multiplier, 'noise_multiplier')
    self.clients_per_round = check_positive(clients_per_round, 'clients_per_round')
    self.l2_norm_clip = check_positive(l2_norm_clip, 'l2_norm_clip')
    if isinstance(num_rounds, bool) or not isinstance(num_rounds, int) or num_rounds < 1:
      raise ValueError(f'num_rounds must be a positive integer; got {num_rounds!r}.')
    if isinstance(num_bands, bool) or not isinstance(num_bands, int):
      raise ValueError(f'num_bands must be an integer; got {num_bands!r}.')
    if not 1 <= num_bands <= num_rounds:
      raise ValueError(f'num_bands must be in [1, num_rounds={num_rounds}]; got {num_bands}.')
    _, banded = _jax_privacy()
    if strategy is None:
      strategy = banded.ColumnNormalizedBanded.default(num_rounds, num_bands)
    elif strategy.n != num_rounds or strategy.bands != num_bands:
      raise ValueError(
          f'strategy has {strategy.n} rows and {strategy.bands} bands; expected num_rounds = '
          f'{num_rounds} rows and num_bands = {num_bands} bands.'
      )
    self.num_rounds, self.num_bands, self.strategy = num_rounds, num_bands, strategy
    self._seed = secrets.randbits(63) if seed is None else seed
    seed_key(self._seed)  # checks the seed's type

  def __repr__(self) -> str:
    return (f'BandedMatrixFactorizationFactory({self.noise_multiplier}, {self.clients_per_round}, '
            f'{self.l2_norm_clip}, num_rounds={self.num_rounds}, num_bands={self.num_bands})')

  def strategy_matrix(self) -> jax.Array:
    """``B``, the ``[num_rounds, num_rounds]`` strategy (lower-triangular, unit-norm columns)."""
    return self.strategy.materialize()

  def dp_event(self, max_participations: int = 1):
    """The run's dp-accounting event when every client trains in at most ``max_participations``
    rounds, any two at least ``num_bands`` apart: ``GaussianDpEvent(z / sqrt(k))``."""
    import dp_accounting

    if isinstance(max_participations, bool) or not isinstance(max_participations, int):
      raise ValueError(f'max_participations must be an integer; got {max_participations!r}.')
    most = -(-self.num_rounds // self.num_bands)  # rounds num_bands apart that fit in n rounds
    if not 1 <= max_participations <= most:
      raise ValueError(
          f'max_participations must be in [1, {most}] (participations {self.num_bands} rounds '
          f'apart within {self.num_rounds} rounds); got {max_participations}.'
      )
    return dp_accounting.GaussianDpEvent(self.noise_multiplier / math.sqrt(max_participations))

  def create(self, value_type: PyTree) -> AggregationProcess:
    """The process for client values of ``value_type`` (a pytree of floating types)."""
    value_type = tensor_type(value_type)
    leaves = jax.tree.leaves(value_type)
    if not leaves or not all(jnp.issubdtype(x.dtype, jnp.floating) for x in leaves):
      raise TypeError(
          'BandedMatrixFactorizationFactory adds Gaussian noise to floating-point values; got '
          f'the value type {value_type}.'
      )
    noise_addition, _ = _jax_privacy()
    key = jax.random.key_data(jax.random.fold_in(jax.random.key(self._seed), 1))
    privatizer = noise_addition.matrix_factorization_privatizer(
        self.strategy.inverse_as_streaming_matrix(),
        stddev=self.noise_multiplier * self.l2_norm_clip,
        prng_key=key,
    )
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), value_type)
    divisor, num_rounds = self.clients_per_round, self.num_rounds
    prepare, work = _fixed_clip(self.l2_norm_clip)

    def initialize():
      return {'noise_state': privatizer.init(zeros), 'round': jnp.zeros((), jnp.int32)}

    def report(state, summed):
      noised, noise_state = privatizer.update(summed, state['noise_state'])
      covered = state['round'] < num_rounds
      mean = jax.tree.map(
          lambda x: jnp.where(covered, x / jnp.asarray(divisor, x.dtype), jnp.nan).astype(x.dtype),
          noised,
      )
      new_state = {'noise_state': noise_state, 'round': state['round'] + 1}
      return MeasuredProcessOutput(new_state, mean, {'dp_query_metrics': {}, 'dp': ()})

    return build_map_reduce_aggregation(
        initialize, MapReduceForm(prepare, work, report), value_type, False, 'dp_banded_mf'
    )
