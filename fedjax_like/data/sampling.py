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

Round ``r``'s draw uses ``numpy.random.default_rng(SeedSequence([seed, r, stream]))``, so rounds are
independent streams and no draw depends on how many rounds came before it.
"""

from __future__ import annotations

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
