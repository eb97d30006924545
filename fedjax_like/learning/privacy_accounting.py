"""Privacy accounting for DP-FedAvg: the epsilon spent after ``t`` rounds, for a given delta.

A round of DP-FedAvg (``DifferentiallyPrivateFactory``, ``dp_aggregator``) is a Gaussian mechanism
with noise multiplier ``z`` (noise stddev over the clip: the *effective* ``z`` of
``gaussian_adaptive``, value and clipped count together) applied to a sampled cohort. Which
sampled mechanism it is depends on the **client sampler**, so the accountant is built from it
(:meth:`PrivacyAccountant.for_sampler`) and refuses a sampler that does not match
(:meth:`PrivacyAccountant.check_sampler`). Per round, with ``N`` clients and cohort ``n``:

- ``PoissonSampler`` (``q = n / N``): ``PoissonSampledDpEvent(q, GaussianDpEvent(z))``;
  RDP and PLD.
- ``PoissonSampler`` truncated to ``B`` clients: ``TruncatedSubsampledGaussianDpEvent(N, q, B,
  z)``; PLD only.
- ``UniformSampler`` (``n`` of ``N``): ``SampledWithoutReplacementDpEvent(N, n,
  GaussianDpEvent(z / 2))``; RDP only.
- ``FixedSampler``: ``GaussianDpEvent(z)`` every round (no amplification); RDP and PLD.

Notes:

- Poisson sampling is accounted under add-or-remove-one-client neighbours, where the clipped sum's
  sensitivity is the clip ``C``. Sampling without replacement has an analysis only under
  replace-one neighbours (dp-accounting's RDP, Wang, Balle and Kasiviswanathan 2019), where
  replacing a client moves the clipped sum by up to ``2C``: its Gaussian's multiplier (noise over
  sensitivity) is ``z / 2``. (Composing ``GaussianDpEvent(z)`` there, as some tutorials do,
  understates epsilon.)
- ``FixedSampler``'s clients may train every round: ``T`` Gaussian mechanisms, no amplification
  (an upper bound for clients in only some of its cohorts).
- ``WeightedSampler`` has no sampling analysis here and is refused.
- A combination dp-accounting does not support raises :class:`UnsupportedAccountingError` saying
  which method does.

``epsilon(t)`` composes the round's event ``t`` times (``SelfComposedDpEvent(event, t)``) and is
the same number dp-accounting's own accountant gives for that event (the RDP of one round, or
the PLD of one round, is computed once and reused; ``t`` rounds of RDP are ``t`` times one
round's, and PLD is self-composed ``t`` times). RDP is cheap after the first call; PLD is
tighter and pays one self-composition per call.

:func:`noise_multiplier_for_epsilon` calibrates ``z`` for a target epsilon by bisection.

Needs ``dp-accounting`` (``pip install 'fedjax_like[dp]'``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Literal

Method = Literal['rdp', 'pld']
_KINDS = ('poisson', 'fixed_size', 'every_round')
# PLDAccountant's default discretization, used for the cached one-round PLD as well.
_PLD_DISCRETIZATION = 1e-4


class UnsupportedAccountingError(ValueError):
  """No accountant (or not the one asked for) supports this sampling and mechanism."""


class SamplerMismatchError(ValueError):
  """The accountant composes a different sampling than the sampler in use draws."""


def _dp_accounting():
  try:
    import dp_accounting
  except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "Privacy accounting needs dp-accounting: pip install 'fedjax_like[dp]'."
    ) from e
  return dp_accounting


@dataclasses.dataclass(frozen=True)
class Sampling:
  """How clients are sampled each round, as the accountant sees it.

  Attributes:
    kind: ``'poisson'`` (each client independently with probability ``q = n / N``),
      ``'fixed_size'`` (``n`` distinct clients uniformly without replacement) or ``'every_round'``
      (a fixed cohort: no sampling).
    population: ``N``, the number of clients sampled from.
    clients_per_round: ``n``: the expected cohort (Poisson) or the cohort's size.
    max_cohort_size: Poisson only: draws above it are truncated to it (None: never).
  """

  kind: Literal['poisson', 'fixed_size', 'every_round']
  population: int
  clients_per_round: float
  max_cohort_size: int | None = None

  def __post_init__(self):
    if self.kind not in _KINDS:
      raise ValueError(f'Sampling.kind must be one of {_KINDS}; got {self.kind!r}.')
    if not (isinstance(self.population, int) and self.population >= 1):
      raise ValueError(f'Sampling.population must be a positive integer; got {self.population!r}.')
    if not 0 < self.clients_per_round <= self.population:
      raise ValueError(
          f'Sampling.clients_per_round must be in (0, population={self.population}]; got '
          f'{self.clients_per_round!r}.'
      )
    if self.kind == 'fixed_size' and self.clients_per_round != int(self.clients_per_round):
      raise ValueError('Sampling: a fixed-size cohort has an integer clients_per_round.')
    if self.max_cohort_size is not None and self.kind != 'poisson':
      raise ValueError('Sampling.max_cohort_size applies to Poisson sampling only.')

  @property
  def sampling_probability(self) -> float:
    """The chance that a given client trains in a given round."""
    return 1.0 if self.kind == 'every_round' else self.clients_per_round / self.population

  @classmethod
  def of(cls, sampler) -> Sampling:
    """The sampling a sampler from :mod:`fedjax_like.data.sampling` performs (from its
    ``state()``).

    Raises:
      UnsupportedAccountingError: a sampler with no privacy analysis (``WeightedSampler``, or an
        unknown kind).
    """
    state = sampler.state() if hasattr(sampler, 'state') else {}
    kind = state.get('kind')
    if kind == 'poisson':
      n = state['num_clients']
      return cls('poisson', n, state['sampling_probability'] * n, state.get('max_cohort_size'))
    if kind == 'uniform':
      return cls('fixed_size', state['num_clients'], state['cohort_size'])
    if kind == 'fixed':
      size = getattr(sampler, 'cohort_size', 1)
      return cls('every_round', size, size)
    raise UnsupportedAccountingError(
        f'No privacy analysis covers the client sampler {type(sampler).__name__} (kind {kind!r}): '
        'sampling by weight is not uniform. Use PoissonSampler (the sampling DP-FedAvg is '
        'analysed for) or UniformSampler.'
    )

  def describe(self) -> str:
    if self.kind == 'poisson':
      text = (f'Poisson sampling (q = {self.sampling_probability:.6g}, about '
              f'{self.clients_per_round:g} of {self.population} clients a round')
      if self.max_cohort_size is not None:
        text += f', truncated to {self.max_cohort_size}'
      return text + ')'
    if self.kind == 'fixed_size':
      return (f'fixed-size sampling without replacement ({int(self.clients_per_round)} of '
              f'{self.population} clients a round)')
    return f'the same {int(self.clients_per_round)} clients every round (no sampling)'

  def matches(self, other: Sampling) -> bool:
    return (
        self.kind == other.kind
        and self.population == other.population
        and math.isclose(self.clients_per_round, other.clients_per_round, rel_tol=1e-9)
        and self.max_cohort_size == other.max_cohort_size
    )


def round_event(noise_multiplier: float, sampling: Sampling):
  """The dp-accounting event of one round (see the module's table)."""
  dpa = _dp_accounting()
  z = float(noise_multiplier)
  if sampling.kind == 'poisson':
    if sampling.max_cohort_size is not None:
      return dpa.TruncatedSubsampledGaussianDpEvent(
          sampling.population, sampling.sampling_probability, sampling.max_cohort_size, z
      )
    return dpa.PoissonSampledDpEvent(sampling.sampling_probability, dpa.GaussianDpEvent(z))
  if sampling.kind == 'fixed_size':
    # Replace-one neighbours: the clipped sum moves by up to 2C, so noise / sensitivity = z / 2.
    return dpa.SampledWithoutReplacementDpEvent(
        sampling.population, int(sampling.clients_per_round), dpa.GaussianDpEvent(z / 2)
    )
  return dpa.GaussianDpEvent(z)


def neighboring_relation(sampling: Sampling):
  """Replace-one for sampling without replacement (its only analysis), else add-or-remove-one."""
  relation = _dp_accounting().NeighboringRelation
  return relation.REPLACE_ONE if sampling.kind == 'fixed_size' else relation.ADD_OR_REMOVE_ONE


def make_accountant(method: Method, sampling: Sampling):
  """A fresh dp-accounting accountant (``rdp.RdpAccountant`` or ``pld.PLDAccountant``) with the
  neighbouring relation ``sampling`` is analysed under."""
  dpa = _dp_accounting()
  relation = neighboring_relation(sampling)
  if method == 'rdp':
    return dpa.rdp.RdpAccountant(neighboring_relation=relation)
  if method == 'pld':
    return dpa.pld.PLDAccountant(relation, value_discretization_interval=_PLD_DISCRETIZATION)
  raise ValueError(f"method must be 'rdp' or 'pld'; got {method!r}.")


def _check_supported(method: Method, sampling: Sampling, event) -> None:
  if make_accountant(method, sampling).supports(event):
    return
  other = 'pld' if method == 'rdp' else 'rdp'
  hint = ''
  if make_accountant(other, sampling).supports(event):
    hint = f" Use method='{other}', which supports it."
  if sampling.kind == 'poisson' and sampling.max_cohort_size is not None and method == 'rdp':
    hint += ' Or sample without max_cohort_size (no truncation): plain Poisson has an RDP analysis.'
  raise UnsupportedAccountingError(
      f"dp-accounting's {method.upper()} accountant cannot account {sampling.describe()} "
      f'({type(event).__name__}).{hint}'
  )


class PrivacyAccountant:
  """The epsilon spent after ``t`` rounds of a Gaussian DP aggregator under a client sampling.

  Args:
    noise_multiplier: ``z >= 0``: noise stddev over the clip (for ``gaussian_adaptive`` /
      ``dp_aggregator``, the effective ``noise_multiplier`` passed to it).
    sampling: a :class:`Sampling` (or use :meth:`for_sampler`).
    delta: the target delta in (0, 1).
    method: ``'rdp'`` (Renyi DP; fast) or ``'pld'`` (privacy loss distributions; tighter).

  Raises:
    UnsupportedAccountingError: ``method`` does not support the sampling's event.
  """

  def __init__(
      self, noise_multiplier: float, sampling: Sampling, delta: float, method: Method = 'rdp'
  ):
    if not (isinstance(noise_multiplier, (int, float)) and noise_multiplier >= 0):
      raise ValueError(f'noise_multiplier must be >= 0; got {noise_multiplier!r}.')
    if not (isinstance(delta, float) and 0.0 < delta < 1.0):
      raise ValueError(f'delta must be a float in (0, 1), e.g. 1e-5; got {delta!r}.')
    if method not in ('rdp', 'pld'):
      raise ValueError(f"method must be 'rdp' or 'pld'; got {method!r}.")
    self.noise_multiplier = float(noise_multiplier)
    self.sampling = sampling
    self.delta = delta
    self.method = method
    self.round_event = round_event(self.noise_multiplier, sampling)
    _check_supported(method, sampling, self.round_event)
    self._one_round = None
    self._cache: dict[int, float] = {}

  @classmethod
  def for_sampler(
      cls, sampler, noise_multiplier: float, delta: float, method: Method = 'rdp'
  ) -> PrivacyAccountant:
    """The accountant of the sampling ``sampler`` performs (see :meth:`Sampling.of`)."""
    return cls(noise_multiplier, Sampling.of(sampler), delta, method)

  def __repr__(self) -> str:
    return (f'PrivacyAccountant(z={self.noise_multiplier}, {self.sampling.describe()}, '
            f'delta={self.delta}, method={self.method!r})')

  def event(self, num_rounds: int):
    """``SelfComposedDpEvent(round_event, num_rounds)``: what ``epsilon(num_rounds)`` accounts."""
    return _dp_accounting().SelfComposedDpEvent(self.round_event, int(num_rounds))

  def check_sampler(self, sampler) -> None:
    """Raises :class:`SamplerMismatchError` unless ``sampler`` draws the sampling accounted."""
    drawn = Sampling.of(sampler)
    if not drawn.matches(self.sampling):
      raise SamplerMismatchError(
          f'The privacy accountant composes {self.sampling.describe()}, but the client sampler '
          f'{type(sampler).__name__} draws {drawn.describe()}: its epsilon would not be the '
          'epsilon of this run. Build the accountant from the sampler in use: '
          'PrivacyAccountant.for_sampler(sampler, noise_multiplier, delta).'
      )

  def _prepare(self):
    """One round's RDP vector (RDP) or privacy loss distribution (PLD), computed once."""
    dpa = _dp_accounting()
    if self.method == 'rdp':
      accountant = make_accountant('rdp', self.sampling)
      # dp-accounting logs a warning per fractional order whose series does not converge (it
      # leaves that order out, which can only raise epsilon): quiet, once per accountant.
      absl_logger = logging.getLogger('absl')
      level = absl_logger.level
      absl_logger.setLevel(logging.ERROR)
      try:
        accountant.compose(self.round_event)
      finally:
        absl_logger.setLevel(level)
      return accountant.orders, accountant.rdp
    # The same constructors and arguments dp-accounting's PLDAccountant uses for these events.
    pld = dpa.pld.privacy_loss_distribution
    relation = neighboring_relation(self.sampling)
    z, s = self.noise_multiplier, self.sampling
    if s.kind == 'poisson' and s.max_cohort_size is not None:
      return pld.from_truncated_subsampled_gaussian_mechanism(
          dataset_size=s.population, sampling_probability=s.sampling_probability,
          truncated_batch_size=s.max_cohort_size, noise_multiplier=z,
          value_discretization_interval=_PLD_DISCRETIZATION, neighboring_relation=relation,
      )
    if s.kind == 'poisson':
      return pld.from_gaussian_mechanism(
          standard_deviation=z, value_discretization_interval=_PLD_DISCRETIZATION,
          sampling_prob=s.sampling_probability, neighboring_relation=relation,
      )
    return None  # every_round: the composed Gaussian is built per count (below), as dp-accounting

  def epsilon(self, num_rounds: int) -> float:
    """The epsilon spent after ``num_rounds`` rounds at ``delta`` (0 for 0 rounds; inf for
    ``z = 0``)."""
    t = int(num_rounds)
    if t < 0:
      raise ValueError(f'num_rounds must be >= 0; got {num_rounds!r}.')
    if t == 0 or self.sampling.sampling_probability == 0:
      return 0.0
    if self.noise_multiplier == 0:
      return math.inf
    if t in self._cache:
      return self._cache[t]
    dpa = _dp_accounting()
    if self._one_round is None:
      self._one_round = self._prepare()
    if self.method == 'rdp':
      orders, rdp = self._one_round
      eps = dpa.rdp.rdp_privacy_accountant.compute_epsilon(orders, t * rdp, self.delta)[0]
    elif self._one_round is None:  # PLD of T Gaussians: one Gaussian with stddev z / sqrt(T)
      pld = dpa.pld.privacy_loss_distribution.from_gaussian_mechanism(
          standard_deviation=self.noise_multiplier / math.sqrt(t),
          value_discretization_interval=_PLD_DISCRETIZATION,
          neighboring_relation=neighboring_relation(self.sampling),
      )
      eps = pld.get_epsilon_for_delta(self.delta)
    else:
      eps = self._one_round.self_compose(t).get_epsilon_for_delta(self.delta)
    self._cache[t] = float(eps)
    return float(eps)

  def state(self) -> dict[str, Any]:
    """A JSON-able description (for run records)."""
    return {
        'noise_multiplier': self.noise_multiplier,
        'delta': self.delta,
        'method': self.method,
        'sampling': dataclasses.asdict(self.sampling),
        'event': type(self.round_event).__name__,
    }


def noise_multiplier_for_epsilon(
    target_epsilon: float,
    delta: float,
    num_rounds: int,
    clients_per_round: float,
    population: int,
    *,
    sampling: Literal['poisson', 'fixed_size', 'every_round'] = 'poisson',
    max_cohort_size: int | None = None,
    method: Method = 'rdp',
    tolerance: float = 1e-3,
    max_noise_multiplier: float = 1e3,
) -> float:
  """The noise multiplier ``z`` whose ``epsilon(num_rounds)`` at ``delta`` meets ``target_epsilon``.

  Epsilon decreases as ``z`` grows; bisection over ``z`` (the accountant above at each point)
  brackets the smallest ``z`` meeting the target and returns the bracket's upper end ``z_hi``, so

      epsilon(z_hi) <= target_epsilon < epsilon(z_hi - tolerance)

  i.e. the returned ``z`` meets the target and is within ``tolerance`` of the smallest one that
  does (unless that is below ``tolerance`` itself).

  Args:
    target_epsilon: ``> 0``.
    delta: in (0, 1).
    num_rounds: rounds the run trains (``T >= 1``).
    clients_per_round: ``n`` (expected for Poisson).
    population: ``N``.
    sampling: ``'poisson'`` (default), ``'fixed_size'`` or ``'every_round'`` (see
      :class:`Sampling`).
    max_cohort_size: Poisson truncation (PLD only).
    method: ``'rdp'`` or ``'pld'``.
    tolerance: the bisection's width on ``z`` (absolute).
    max_noise_multiplier: give up above this ``z``.

  Raises:
    ValueError: the target cannot be met with ``z <= max_noise_multiplier``.
  """
  if not target_epsilon > 0:
    raise ValueError(f'target_epsilon must be > 0; got {target_epsilon!r}.')
  if not (isinstance(num_rounds, int) and num_rounds >= 1):
    raise ValueError(f'num_rounds must be a positive integer; got {num_rounds!r}.')
  if not tolerance > 0:
    raise ValueError(f'tolerance must be > 0; got {tolerance!r}.')
  plan = Sampling(sampling, int(population), clients_per_round, max_cohort_size)

  def epsilon(z: float) -> float:
    return PrivacyAccountant(z, plan, float(delta), method).epsilon(num_rounds)

  lo, hi = 0.0, 1.0
  while epsilon(hi) > target_epsilon:
    lo, hi = hi, 2 * hi
    if hi > max_noise_multiplier:
      raise ValueError(
          f'No noise multiplier up to {max_noise_multiplier} reaches epsilon {target_epsilon} at '
          f'delta {delta} after {num_rounds} rounds of {plan.describe()}.'
      )
  while hi - lo > tolerance:
    mid = 0.5 * (lo + hi)
    if epsilon(mid) <= target_epsilon:
      hi = mid
    else:
      lo = mid
  return hi
