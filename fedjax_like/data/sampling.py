"""Client samplers: which clients train in each round, seeded and reproducible.

A sampler is a pure function of the round number: ``sampler.sample(round_num)`` returns the same
client ids whenever it is called with the same round and seed, in any process and in any order of
calls. A resumed run therefore draws exactly the cohorts an uninterrupted one would, and a sampler's
position in a checkpoint is just the round number; ``state()`` describes the rest (kind, seed,
cohort size, population) so a resume can check it is drawing from the same sampler.

- :class:`UniformSampler`: ``cohort_size`` distinct clients a round, each equally likely (TFF's
  default, FedJAX's ``UniformGetClientSampler``).
- :class:`WeightedSampler`: distinct clients, drawn one after another with probability
  proportional to a weight (by default the client's number of examples).
- :class:`FixedSampler`: the same cohort every round, or a fixed list of cohorts cycled through.
- :class:`PoissonSampler`: each client independently with probability ``q`` (the sampling that
  DP-SGD's and DP-FedAvg's privacy analyses assume); the cohort's size varies from round to round,
  optionally truncated to ``max_cohort_size`` (see the class for how static shapes and the privacy
  accounting deal with both).

Round ``r``'s draw uses ``numpy.random.default_rng(SeedSequence([seed, r, stream]))``, so rounds are
independent streams and no draw depends on how many rounds came before it.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

# Separates the sampler's random stream from the other streams seeded by the same run seed.
_SAMPLER_STREAM = 0x5A3D


@runtime_checkable
class ClientSampler(Protocol):
  """Picks the client ids of a round: ``sample(round_num) -> list[str]``, a pure function."""

  def sample(self, round_num: int) -> list[str]: ...

  def state(self) -> dict[str, Any]: ...


def _round_rng(seed: int, round_num: int) -> np.random.Generator:
  if round_num < 0:
    raise ValueError(f'round_num must be >= 0; got {round_num}.')
  return np.random.default_rng(np.random.SeedSequence([int(seed), int(round_num), _SAMPLER_STREAM]))


def _population_digest(client_ids: Sequence[str]) -> int:
  """A stable checksum of the client population (same ids in the same order)."""
  return zlib.crc32('\n'.join(client_ids).encode())


def _checked_ids(client_ids: Sequence[str], cohort_size: int, what: str) -> list[str]:
  ids = [str(c) for c in client_ids]
  if not ids:
    raise ValueError(f'{what}: the population is empty; pass at least one client id.')
  if len(set(ids)) != len(ids):
    raise ValueError(f'{what}: client ids must be unique.')
  if not isinstance(cohort_size, (int, np.integer)) or cohort_size < 1:
    raise ValueError(f'{what}: cohort_size must be a positive integer; got {cohort_size!r}.')
  if cohort_size > len(ids):
    raise ValueError(
        f'{what}: cohort_size={cohort_size} is larger than the population ({len(ids)} clients); '
        'sampling is without replacement within a round.'
    )
  return ids


class UniformSampler:
  """``cohort_size`` distinct clients per round, uniformly at random.

  Args:
    client_ids: the population, in a fixed order (e.g. ``ClientData.client_ids``).
    cohort_size: clients per round.
    seed: the run's seed.
  """

  def __init__(self, client_ids: Sequence[str], cohort_size: int, seed: int = 0):
    self._ids = _checked_ids(client_ids, cohort_size, 'UniformSampler')
    self.cohort_size = int(cohort_size)
    self.seed = int(seed)

  def sample(self, round_num: int) -> list[str]:
    """The client ids of round ``round_num`` (a pure function of ``seed`` and the round)."""
    picks = _round_rng(self.seed, round_num).choice(len(self._ids), self.cohort_size, replace=False)
    return [self._ids[i] for i in picks]

  def state(self) -> dict[str, Any]:
    return {
        'kind': 'uniform',
        'seed': self.seed,
        'cohort_size': self.cohort_size,
        'num_clients': len(self._ids),
        'population_crc32': _population_digest(self._ids),
    }


class WeightedSampler:
  """Distinct clients per round, each draw proportional to a client's weight.

  Args:
    weights: ``{client_id: weight >= 0}``, e.g. ``ClientData.client_sizes()`` to sample by size.
      Clients with weight 0 are never drawn.
    cohort_size: clients per round (at most the number of clients with a positive weight).
    seed: the run's seed.
  """

  def __init__(self, weights: Mapping[str, float], cohort_size: int, seed: int = 0):
    self._ids = _checked_ids(list(weights), cohort_size, 'WeightedSampler')
    w = np.asarray([float(weights[c]) for c in weights], dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
      raise ValueError('WeightedSampler: weights must be finite and >= 0.')
    if np.count_nonzero(w) < cohort_size:
      raise ValueError(
          f'WeightedSampler: only {np.count_nonzero(w)} clients have a positive weight, fewer than '
          f'cohort_size={cohort_size}.'
      )
    self._p = w / w.sum()
    self.cohort_size = int(cohort_size)
    self.seed = int(seed)

  def sample(self, round_num: int) -> list[str]:
    """The client ids of round ``round_num`` (a pure function of ``seed`` and the round)."""
    rng = _round_rng(self.seed, round_num)
    picks = rng.choice(len(self._ids), self.cohort_size, replace=False, p=self._p)
    return [self._ids[i] for i in picks]

  def state(self) -> dict[str, Any]:
    return {
        'kind': 'weighted',
        'seed': self.seed,
        'cohort_size': self.cohort_size,
        'num_clients': len(self._ids),
        'population_crc32': _population_digest(self._ids),
        'weights_crc32': zlib.crc32(self._p.tobytes()),
    }


class FixedSampler:
  """A fixed cohort every round, or a list of cohorts used in turn (round ``r`` gets entry
  ``(r - 1) % len(cohorts)``, so round 1 gets the first).

  Args:
    cohorts: one list of client ids, or a list of such lists.
  """

  def __init__(self, cohorts: Sequence[str] | Sequence[Sequence[str]]):
    if cohorts and all(isinstance(c, str) for c in cohorts):
      cohorts = [cohorts]
    self._cohorts = [_checked_ids(c, max(len(c), 1), 'FixedSampler') for c in cohorts]
    if not self._cohorts:
      raise ValueError('FixedSampler: pass at least one cohort.')
    self.cohort_size = len(self._cohorts[0])

  def sample(self, round_num: int) -> list[str]:
    if round_num < 0:
      raise ValueError(f'round_num must be >= 0; got {round_num}.')
    return list(self._cohorts[(round_num - 1) % len(self._cohorts)])

  def state(self) -> dict[str, Any]:
    return {
        'kind': 'fixed',
        'num_cohorts': len(self._cohorts),
        'cohorts_crc32': _population_digest(['\t'.join(c) for c in self._cohorts]),
    }


def binomial_tail(num_trials: int, probability: float, threshold: int) -> float:
  """``P[Binomial(num_trials, probability) > threshold]``, summed in log space (float64)."""
  if threshold >= num_trials or probability <= 0.0:
    return 0.0
  if threshold < 0 or probability >= 1.0:
    return 1.0
  log_p, log_q = math.log(probability), math.log1p(-probability)
  log_n = math.lgamma(num_trials + 1)
  terms = [
      log_n - math.lgamma(k + 1) - math.lgamma(num_trials - k + 1) + k * log_p
      + (num_trials - k) * log_q
      for k in range(threshold + 1, num_trials + 1)
  ]
  top = max(terms)
  return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


class PoissonSampler:
  """Each client joins a round independently with probability ``q`` (Poisson sampling).

  This is the sampling that the privacy analysis of DP-FedAvg composes
  (``PoissonSampledDpEvent(q, GaussianDpEvent(z))``, see
  :mod:`fedjax_like.learning.privacy_accounting`): the cohort of round ``r`` is
  ``{c : u_c < q}`` for ``u ~ U[0, 1)^N`` drawn from ``(seed, r)``, in population order. Its size is
  ``Binomial(N, q)``, with mean ``q N`` (the ``clients_per_round`` a DP aggregator divides by).

  **Static shapes.** A round is compiled for its cohort's shape, so a cohort that changes size
  every round would compile a program per size. The training loop therefore pads each cohort
  with masked, empty clients to :meth:`padded_size` (the next of 1, 2, 3, 4, 6, 8, 12, 16, ...,
  at most 1.5x, capped at ``max_cohort_size``): a few programs serve every round. Padding clients
  are masked out of every sum, so the round's result is that of the real cohort; privacy is
  unaffected. (Algorithms with per-client state, e.g. SCAFFOLD, run unpadded cohorts.)

  **Truncation.** With ``max_cohort_size = B``, a draw of more than ``B`` clients keeps a uniformly
  random ``B`` of them (seeded by the same round stream). This is *not* Poisson sampling any more,
  and the accounting says so: the round's event is dp-accounting's
  ``TruncatedSubsampledGaussianDpEvent(N, q, B, z)`` (the analysis of truncated Poisson sampling,
  https://arxiv.org/abs/2508.15089), which only the PLD accountant supports; the RDP accountant
  refuses a truncating sampler rather than report the untruncated epsilon. Truncation bounds the
  round's memory; when ``B`` is far in the binomial tail the epsilon barely changes. Without
  ``max_cohort_size`` (the default) nothing is truncated and the cohort's size is unbounded.

  **Empty rounds.** A round may draw no client at all (probability ``(1 - q)^N``); the sampler
  returns an empty list and the training loop stops there with an error naming the round (a
  round with no client cannot be compiled). Keep ``q N`` large enough that this is negligible
  over the run (``(1 - q)^N`` is ``2e-10`` for ``q = 0.2, N = 100``).

  Args:
    client_ids: the population, in a fixed order (e.g. ``ClientData.client_ids``).
    sampling_probability: ``q`` in (0, 1]; for an expected cohort of ``n``, ``n / len(client_ids)``
      (:meth:`with_expected_size`).
    seed: the run's seed.
    max_cohort_size: ``B``, truncate larger draws to ``B`` clients (None: never truncate).
  """

  def __init__(
      self,
      client_ids: Sequence[str],
      sampling_probability: float,
      seed: int = 0,
      max_cohort_size: int | None = None,
  ):
    self._ids = _checked_ids(client_ids, 1, 'PoissonSampler')
    q = sampling_probability
    if isinstance(q, bool) or not isinstance(q, (int, float, np.floating)) or not 0.0 < q <= 1.0:
      raise ValueError(
          f'PoissonSampler: sampling_probability must be in (0, 1]; got {sampling_probability!r}. '
          'For an expected cohort of n clients use n / len(client_ids).'
      )
    if max_cohort_size is not None and (
        not isinstance(max_cohort_size, (int, np.integer)) or max_cohort_size < 1
    ):
      raise ValueError(
          f'PoissonSampler: max_cohort_size must be a positive integer or None; got '
          f'{max_cohort_size!r}.'
      )
    self.sampling_probability = float(q)
    self.seed = int(seed)
    self.max_cohort_size = None if max_cohort_size is None else int(max_cohort_size)

  @classmethod
  def with_expected_size(
      cls, client_ids: Sequence[str], clients_per_round: float, seed: int = 0, **kwargs
  ) -> PoissonSampler:
    """``q = clients_per_round / len(client_ids)``: ``clients_per_round`` clients on average."""
    ids = list(client_ids)
    if not 0 < clients_per_round <= len(ids):
      raise ValueError(
          f'PoissonSampler: clients_per_round must be in (0, {len(ids)}] (the population); '
          f'got {clients_per_round!r}.'
      )
    return cls(ids, clients_per_round / len(ids), seed, **kwargs)

  @property
  def num_clients(self) -> int:
    """``N``, the population's size."""
    return len(self._ids)

  @property
  def expected_cohort_size(self) -> float:
    """``q N``."""
    return self.sampling_probability * len(self._ids)

  def truncation_probability(self) -> float:
    """``P[Binomial(N, q) > max_cohort_size]``: the chance that a round is truncated (0 if
    never)."""
    if self.max_cohort_size is None:
      return 0.0
    return binomial_tail(len(self._ids), self.sampling_probability, self.max_cohort_size)

  def sample(self, round_num: int) -> list[str]:
    """The client ids of round ``round_num`` (a pure function of ``seed`` and the round); may be
    empty."""
    rng = _round_rng(self.seed, round_num)
    picks = np.flatnonzero(rng.random(len(self._ids)) < self.sampling_probability)
    if self.max_cohort_size is not None and picks.size > self.max_cohort_size:
      picks = np.sort(rng.choice(picks, self.max_cohort_size, replace=False))
    return [self._ids[i] for i in picks]

  def padded_size(self, num_clients: int) -> int:
    """The cohort size a round of ``num_clients`` clients is padded to: the next of 1, 2, 3, 4,
    6, 8, 12, 16, 24, ... (two sizes per doubling), capped at ``max_cohort_size``."""
    n = max(int(num_clients), 1)
    if n > 2:
      power = 1 << (n - 1).bit_length()
      n = power * 3 // 4 if n <= power * 3 // 4 else power
    if self.max_cohort_size is not None:
      n = max(min(n, self.max_cohort_size), int(num_clients))
    return n

  def state(self) -> dict[str, Any]:
    return {
        'kind': 'poisson',
        'seed': self.seed,
        'sampling_probability': self.sampling_probability,
        'max_cohort_size': self.max_cohort_size,
        'num_clients': len(self._ids),
        'population_crc32': _population_digest(self._ids),
    }
