"""Cohort plans: the order clients run in, step groups, and lanes; functions of the cohort alone.

**Step groups** (the ``vmap``/``chunked``/``sequential`` runners). Real cohorts differ 100x in
size, and a vectorized program runs every client for the longest one's step count. So the cohort
is ordered longest-first and run as *step groups*: contiguous runs of clients, each vectorized
over only as many steps as its longest member needs (:func:`plan_step_groups`: dynamic
programming over cut points at 1/64ths of the cohort, step budgets on a 1.25x ladder, at most 12
groups). The groups also set the memory: the cohort is packed as one block per group, each padded
only to its budget (:func:`fedjax_like.data.packing.pack_groups`).

**Lanes** (the ``lanes`` runner, :mod:`.lanes`). Clients are bin-packed by step count into lanes
(longest processing time first: each client, longest first, goes to the least loaded lane); a
lane runs its clients back to back, so a vectorized round computes ``lanes x lane length`` steps
of which only the lanes' slack is padding (:func:`plan_lanes` picks the most lanes whose padding
stays under 10%, the lane length on a fine ladder so cohorts share compiled programs).

A plan is a pure function of the cohort's step counts (and the number of devices): the same
cohort gives the same plan, so a resumed run replays the same compiled programs bit for bit.
"""

from __future__ import annotations

import dataclasses
import heapq

import numpy as np

_MAX_GROUPS = 12  # more groups cut little more waste but lengthen the program and its compile
_MIN_GROUP = 4  # clients per group at least: narrower groups would leave an accelerator idle
_GRID = 64  # group boundaries fall on 1/64ths of the (per-device) cohort
_WASTE_TARGET = 0.15


def step_budget(num_steps: int) -> int:
  """The smallest rung of the step ladder ``1..8, 10, 12, 14, 16, 20, 24, 28, 32, 40, ...`` (at
  most 25% apart) holding ``num_steps``; budgets on a ladder keep the compiled shapes few."""
  num_steps = max(int(num_steps), 1)
  if num_steps <= 8:
    return num_steps
  quantum = 2 ** (int(np.floor(np.log2(num_steps - 1))) - 2)
  return -(-num_steps // quantum) * quantum


@dataclasses.dataclass(frozen=True)
class StepPlan:
  """How a cohort is laid out for vectorized execution (see :func:`plan_step_groups`).

  Attributes:
    order: ``order[k]`` is the index (into the given cohort) of the client at position ``k``.
    groups: per device, ``((num_clients, num_steps), ...)`` over consecutive positions; None
      when the cohort is not split (it cannot be dealt evenly over the devices).
    waste: masked steps / computed steps when the cohort runs vectorized under this plan.
    ungrouped_waste: the same with every client padded to the longest (no groups).
  """

  order: np.ndarray
  groups: tuple[tuple[int, int], ...] | None
  waste: float
  ungrouped_waste: float


def _group_cost(groups) -> int:
  """Steps computed per device under ``groups``."""
  return sum(count * budget for count, budget in groups)


def _best_groups(
    profile: np.ndarray, max_groups: int = _MAX_GROUPS
) -> tuple[tuple[int, int], ...]:
  """Fewest contiguous groups within 2% of the least computed steps (dynamic programming over
  cut points on a grid; ``profile`` is non-increasing)."""
  n = profile.size
  unit = max(_MIN_GROUP, n // _GRID)
  cuts = sorted(set(range(0, n, unit)) | {n})
  if len(cuts) > 2 and cuts[-1] - cuts[-2] < _MIN_GROUP:
    cuts.pop(-2)  # no sliver group at the end
  k = len(cuts)
  inf = float('inf')
  best = [[inf] * k for _ in range(max_groups + 1)]
  back = [[0] * k for _ in range(max_groups + 1)]
  best[0][0] = 0
  for g in range(1, max_groups + 1):
    for j in range(1, k):
      for i in range(j):
        if best[g - 1][i] < inf:
          cost = best[g - 1][i] + (cuts[j] - cuts[i]) * step_budget(profile[cuts[i]])
          if cost < best[g][j]:
            best[g][j], back[g][j] = cost, i
  least = min(best[g][k - 1] for g in range(1, max_groups + 1))
  g = next(g for g in range(1, max_groups + 1) if best[g][k - 1] <= 1.02 * least)
  groups, j = [], k - 1
  while g > 0:
    i = back[g][j]
    groups.append((cuts[j] - cuts[i], step_budget(profile[cuts[i]])))
    j, g = i, g - 1
  return tuple(reversed(groups))


def plan_step_groups(
    steps_per_client,
    num_shards: int = 1,
    grouped: bool = True,
    max_groups: int = _MAX_GROUPS,
) -> StepPlan:
  """Orders a cohort longest-first and splits it into step groups (see the module docstring).

  Args:
    steps_per_client: ``[num_clients]`` real steps of each client.
    num_shards: devices the cohort is split over. Clients are dealt round-robin from the sorted
      order, so every device gets the same mix of long and short clients and the groups (one
      plan for all devices) fit each of them.
    grouped: False gives only the order (``groups`` None).
    max_groups: at most this many groups (each is one more copy of the client program to compile).

  Returns:
    A :class:`StepPlan`.
  """
  steps = np.asarray(steps_per_client, dtype=np.int64).reshape(-1)
  n = steps.size
  order = np.argsort(-steps, kind='stable')
  real = int(steps.sum())
  ungrouped = 1.0 - real / max(n * int(steps.max(initial=1)), 1)
  if n == 0 or n % num_shards:
    return StepPlan(order, None, ungrouped, ungrouped)
  if num_shards > 1:
    order = np.concatenate([order[d::num_shards] for d in range(num_shards)])
  if not grouped:
    return StepPlan(order, None, ungrouped, ungrouped)
  profile = steps[order].reshape(num_shards, -1).max(axis=0)  # non-increasing
  groups = _best_groups(profile, max_groups)
  cost = _group_cost(groups)
  return StepPlan(order, groups, 1.0 - real / max(num_shards * cost, 1), ungrouped)




# ----- lanes ----------------------------------------------------------------------------------

LANE_WASTE_TARGET = 0.10
_MAX_LANES = 256


def _ladder(limit: int) -> list[int]:
  """1..8, then four rungs an octave (10, 12, 14, 16, 20, ...) up to ``limit`` (included)."""
  rungs, k = list(range(1, 9)), 8
  while rungs[-1] < limit:
    rungs.extend(k + k * j // 4 for j in range(1, 5))
    k *= 2
  return [r for r in rungs if r < limit] + [limit]


def _on_ladder(n: int) -> int:
  """The smallest rung of :func:`_ladder` at or above ``n``."""
  return next(r for r in _ladder(max(n, 1)) if r >= n)


def lane_length(num_steps: int) -> int:
  """The lane length rung holding ``num_steps``: exact up to 16, then multiples of 1/16th of the
  enclosing power of two (at most 6.25% over), so cohorts of similar size share one program."""
  num_steps = max(int(num_steps), 1)
  if num_steps <= 16:
    return num_steps
  quantum = 2 ** (int(np.floor(np.log2(num_steps))) - 4)
  return -(-num_steps // quantum) * quantum


@dataclasses.dataclass(frozen=True)
class LanePlan:
  """Clients bin-packed into lanes, per device (see the module docstring).

  Attributes:
    order: ``order[k]`` is the index (into the given cohort) of the client at position ``k``
      (longest first, dealt round-robin over the devices when the cohort divides evenly).
    shape: ``(lanes, length, slots)`` per device: lanes run side by side, each ``length`` steps
      long, holding at most ``slots`` clients.
    lane, start, rank: int32 ``[positions]``, per position: its lane (on its device), the lane
      step it starts at, and its index among its lane's clients. Positions are padded with empty
      clients to a multiple of the devices; each client occupies ``max(steps, 1)`` lane steps.
    waste: padding / computed lane steps (``devices x lanes x length`` computed).
  """

  order: np.ndarray
  shape: tuple[int, int, int]
  lane: np.ndarray
  start: np.ndarray
  rank: np.ndarray
  waste: float


def _pack_lanes(occupancy: np.ndarray, num_lanes: int):
  """Longest-processing-time-first packing of ``occupancy`` (non-increasing) into lanes."""
  loads = np.zeros(num_lanes, np.int64)
  counts = np.zeros(num_lanes, np.int64)
  lane = np.empty(occupancy.size, np.int32)
  start = np.empty(occupancy.size, np.int32)
  rank = np.empty(occupancy.size, np.int32)
  heap = [(0, i) for i in range(num_lanes)]
  for k, steps in enumerate(occupancy):
    load, i = heapq.heappop(heap)
    lane[k], start[k], rank[k] = i, load, counts[i]
    loads[i] += steps
    counts[i] += 1
    heapq.heappush(heap, (int(loads[i]), i))
  return lane, start, rank, int(loads.max(initial=0)), int(counts.max(initial=0))


def plan_lanes(steps_per_client, num_shards: int = 1, max_lanes: int | None = None,
               target: float = LANE_WASTE_TARGET) -> LanePlan:
  """The most lanes per device (up to ``max_lanes``) whose padding stays within ``target``.

  Args:
    steps_per_client: ``[num_clients]`` real steps of each client.
    num_shards: devices the cohort is split over (each gets a contiguous run of positions).
    max_lanes: lanes per device at most (default 256).
    target: the most padding / computed lane steps to accept (one lane always qualifies when
      nothing else does).
  """
  steps = np.asarray(steps_per_client, dtype=np.int64).reshape(-1)
  n = steps.size
  order = np.argsort(-steps, kind='stable')
  if n and n % num_shards == 0 and num_shards > 1:
    order = np.concatenate([order[d::num_shards] for d in range(num_shards)])
  per_device = -(-max(n, 1) // num_shards)
  occupancy = np.ones(per_device * num_shards, np.int64)  # padding positions: one empty step
  occupancy[:n] = np.maximum(steps[order], 1)
  shards = occupancy.reshape(num_shards, per_device)
  real = int(steps.sum())

  def attempt(num_lanes):
    packed = [_pack_lanes(s, num_lanes) for s in shards]
    length = lane_length(max(p[3] for p in packed))
    slots = _on_ladder(max(p[4] for p in packed))
    waste = 1.0 - real / max(num_shards * num_lanes * length, 1)
    return packed, (num_lanes, length, slots), waste

  # More lanes, more slack at the lanes' ends: search the largest count within the target, among
  # lane counts on a ladder (and slots rounded up onto it), so that sampled cohorts of one size
  # share a few compiled shapes.
  counts = _ladder(max(1, min(max_lanes or _MAX_LANES, per_device)))
  lo, hi = 0, len(counts) - 1
  best = attempt(counts[0])
  while lo < hi:
    mid = (lo + hi + 1) // 2
    candidate = attempt(counts[mid])
    if candidate[2] <= target:
      lo, best = mid, candidate
    else:
      hi = mid - 1
  if best[1][0] != counts[lo]:
    best = attempt(counts[lo])
  packed, shape, waste = best
  lane, start, rank = (np.concatenate([p[j] for p in packed]) for j in range(3))
  return LanePlan(order, shape, lane, start, rank, waste)
