"""The cohort engine: the one place that decides how a per-client function runs over a cohort.

Every federated computation reaches the clients through these calls:

- :func:`map_clients` runs ``fn`` once per client and returns the outputs stacked on a leading
  cohort axis ``[num_clients, ...]``;
- :func:`sum_clients` runs ``fn`` once per client and returns only the *sum* of the outputs. A
  weighted mean is a sum of ``(w * x, w)`` pairs, so aggregation never needs the stacked outputs and
  memory can stay O(chunk) however large the cohort is;
- :func:`fold_steps` is a client's loop over its local steps; padding steps are never computed;
- :func:`lower_forward` gives a model's forward pass the lowering that is fast on this backend.

Arguments are pytrees; ``in_axes`` says, per argument, whether it is per-client (``0``: a leading
cohort axis) or the same for every client (``None``: a broadcast value, never copied).

Strategies (all give the same result up to float reassociation; tests hold them to 1e-5):

=============  =============================================================================
``vmap``       the whole cohort side by side in one vectorized program (best for small models
               and on accelerators)
``sequential`` one client at a time in a compiled loop (``lax.scan``); O(1) memory in the cohort
``chunked``    ``chunk_size`` clients at a time, vmapped inside a compiled loop; O(chunk) memory,
               so a cohort of 10,000 fits
=============  =============================================================================

**Ragged clients.** Real cohorts differ 100x in size, and a vectorized program runs every client for
the longest one's step count: on EMNIST-like cohorts 54-80% of the computed steps would be padding.
So the learning process sorts each cohort by step count (longest first) and the engine runs it as
*step groups* (``ExecutionConfig.step_groups``): contiguous runs of clients, each vectorized over
only as many steps as its longest member needs (``fold_steps`` stops there; the steps cut are
padding, which is inert, so results are unchanged). :func:`plan_step_groups` chooses the groups by
dynamic programming over cut points at 1/64ths of the cohort and step budgets on a 1.25x ladder,
keeping masked/computed steps under 15% on EMNIST-like cohorts (tests/learning/test_step_groups.py)
while the set of group shapes stays small; a plan is kept (budgets raised as needed) while it stays
efficient, so rounds reuse one compiled program. Padding steps cost no compute under
``sequential``. On CPU, ``fold_steps`` loops over a client's real steps only (a ``while_loop``
whose trip count is the number of active steps), so under ``vmap`` a group also runs only as long
as its longest member needs, whatever its budget; on accelerators the loop keeps the budget as a
static trip count (see :func:`fold_steps`).

The groups also set the *memory*: the process packs the cohort as one block per group
(:func:`fedjax_like.data.packing.pack_groups`), each padded only to its budget, and joins the
blocks inside the compiled round. Each group's data leaves (those the client function loops over
in ``fold_steps``, found by tracing one client: :func:`_step_major`) are cut to the budget here,
before any loop over clients, so XLA reads them straight from the blocks and the padded
``[clients, longest, ...]`` array is never built under any strategy. An EMNIST-like cohort then
costs about its real data in host memory, in transfer and on the device, not 5x that.

Sharding is orthogonal: with more than one local (or, after ``jax.distributed.initialize``, global)
device, the cohort axis is split over a 1-D device mesh with ``shard_map``; each device runs its
share with the strategy above and the sums meet in one ``psum``. Padding clients added to fill the
last chunk or shard are masked out with ``where``, so a NaN computed on padding never leaks.

``auto`` picks ``sequential`` on CPU, and on accelerators vmap for cohorts up to 256 clients per
device and chunks beyond (see :func:`resolve`). On XLA:CPU a
convolution inside a compiled loop is 25-40x slower than outside one, so on CPU the engine lowers
convolutions to the native direct-convolution kernels, or im2col where those do not apply (see
:mod:`fedjax_like.core.lowering`), which keeps the whole round one compiled program at (or above)
the speed of a plain step. Users override any choice with
``with cohort.execution('chunked', chunk_size=64): ...`` (read when a computation is traced).
Algorithms never call ``vmap`` themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fedjax_like.core import lowering

PyTree = Any
STRATEGIES = ('auto', 'vmap', 'sequential', 'chunked')
CONV_LOWERINGS = ('auto', 'native', 'im2col', 'xla')
CLIENTS_AXIS = 'clients'


@dataclasses.dataclass(frozen=True)
class ExecutionConfig:
  """How clients execute.

  Attributes:
    strategy: one of ``STRATEGIES``.
    chunk_size: clients per chunk for ``chunked`` (and the chunk ``auto`` uses for large cohorts).
    unroll_steps: unroll each client's local-step loop into straight-line code (True) or keep it a
      compiled loop (False, the default).
    conv_lowering: ``'native'`` (the direct-convolution kernels of :mod:`.native`, im2col where
      they do not apply or cannot be built), ``'im2col'``, ``'xla'``, or ``'auto'`` (native on
      CPU, XLA's own elsewhere).
    shard: split the cohort over devices: True, False, or None (when more than one device).
    devices: the devices to shard over (default: all of ``jax.devices()``).
    step_groups: ``((num_clients, num_steps), ...)``: run the (sorted) cohort, per device, as
      contiguous groups each vectorized over only ``num_steps`` steps (see :func:`plan_step_groups`;
      the learning process sets this itself for ``vmap``/``chunked``).
  """

  strategy: str = 'auto'
  chunk_size: int | None = None
  unroll_steps: bool | None = None
  conv_lowering: str = 'auto'
  shard: bool | None = None
  devices: tuple | None = None
  step_groups: tuple[tuple[int, int], ...] | None = None

  def __post_init__(self):
    if self.strategy not in STRATEGIES:
      raise ValueError(f'Unknown execution strategy {self.strategy!r}; choose one of {STRATEGIES}.')
    if self.chunk_size is not None and (not isinstance(self.chunk_size, int) or self.chunk_size < 1):
      raise ValueError(f'chunk_size must be a positive integer; got {self.chunk_size!r}.')
    if self.conv_lowering not in CONV_LOWERINGS:
      raise ValueError(
          f'Unknown conv_lowering {self.conv_lowering!r}; choose one of {CONV_LOWERINGS}.'
      )
    if self.devices is not None:
      object.__setattr__(self, 'devices', tuple(self.devices))
    if self.step_groups is not None:
      groups = tuple((int(c), int(t)) for c, t in self.step_groups)
      if not groups or any(c < 1 or t < 1 for c, t in groups):
        raise ValueError(
            'step_groups must be a non-empty sequence of (num_clients, num_steps) pairs of '
            f'positive integers; got {self.step_groups!r}.'
        )
      object.__setattr__(self, 'step_groups', groups)


_local = threading.local()


def current_config() -> ExecutionConfig:
  """The configuration in force (set by :func:`execution`), else the defaults (``auto``)."""
  return getattr(_local, 'config', None) or ExecutionConfig()


@contextlib.contextmanager
def using(config: ExecutionConfig) -> Iterator[ExecutionConfig]:
  """Puts ``config`` in force for computations traced inside the block."""
  previous = getattr(_local, 'config', None)
  _local.config = config
  try:
    yield config
  finally:
    _local.config = previous


def execution(strategy: str = 'auto', **options):
  """Sets how clients execute for computations traced inside the block (a context manager).

  Args:
    strategy: one of ``STRATEGIES``.
    **options: the other fields of :class:`ExecutionConfig` (``chunk_size``, ``unroll_steps``,
      ``conv_lowering``, ``shard``, ``devices``).
  """
  return using(ExecutionConfig(strategy, **options))


# Above this many clients per device, `auto` stops materializing the whole cohort side by side.
_AUTO_VMAP_LIMIT = 256


def _platform(config: ExecutionConfig) -> str:
  """The platform the computation runs on: that of the config's devices, else the default's."""
  return (config.devices or jax.devices())[0].platform


def resolve(num_clients: int, config: ExecutionConfig | None = None) -> tuple[str, int]:
  """The concrete ``(strategy, chunk_size)`` for ``num_clients`` clients on one device.

  ``auto`` on CPU is ``sequential``: measured here (benchmarks/RESULTS.md) it runs at or above the
  plain SGD step's speed for every model, since padding steps are skipped and nothing is batched
  that XLA:CPU would run slower batched. On accelerators it is ``vmap`` up to 256 clients per
  device, then ``chunked`` in chunks of 256.
  """
  config = config or current_config()
  strategy, chunk = config.strategy, config.chunk_size
  if strategy == 'auto':
    platform = _platform(config)
    if platform == 'cpu' and chunk is None:
      strategy = 'sequential'
    elif num_clients <= _AUTO_VMAP_LIMIT and chunk is None:
      strategy = 'vmap'
    else:
      strategy, chunk = 'chunked', chunk or min(num_clients, _AUTO_VMAP_LIMIT)
  if strategy == 'chunked':
    chunk = min(chunk or 16, num_clients)
  return strategy, chunk or num_clients


def mesh(config: ExecutionConfig | None = None) -> Mesh | None:
  """The 1-D device mesh the cohort is sharded over, or None when it runs on one device."""
  config = config or current_config()
  devices = config.devices or tuple(jax.devices())
  if config.shard is False or (config.shard is None and len(devices) < 2):
    return None
  return Mesh(np.array(devices), (CLIENTS_AXIS,))


def _put(tree: PyTree, sharding) -> PyTree:
  """Host (or local) arrays -> global arrays with ``sharding``; each process supplies its shards."""

  def one(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(one, tree)


def place_cohort(per_client: PyTree, replicated: PyTree, config: ExecutionConfig | None = None):
  """Puts a round's inputs on the mesh (a no-op without one).

  Per-client arrays ``[num_clients, ...]`` are padded with zero clients to a multiple of the mesh
  size and split over it; ``replicated`` (the server state) is copied to every device. Works the
  same in one process and across processes after ``jax.distributed.initialize`` (every process
  passes the same host values, as a seeded sampler and packer give). Zero padding clients must be
  inert for the computation: an all-False mask is (no examples, weight 0).

  Returns:
    ``(per_client, replicated)`` placed.
  """
  m = mesh(config)
  if m is None:
    return per_client, replicated
  n = _leading(per_client)
  padded = -(-n // m.size) * m.size
  if padded != n:
    per_client = jax.tree.map(
        lambda x: np.concatenate([np.asarray(x), np.zeros((padded - n,) + x.shape[1:], x.dtype)]),
        per_client,
    )
  return (
      _put(per_client, NamedSharding(m, PartitionSpec(CLIENTS_AXIS))),
      _put(replicated, NamedSharding(m, PartitionSpec())),
  )


# ----- argument handling ------------------------------------------------------------------------


def _num_clients(args: Sequence[PyTree], in_axes: Sequence[int | None]) -> int:
  sizes = {
      leaf.shape[0]
      for arg, axis in zip(args, in_axes)
      if axis == 0
      for leaf in jax.tree.leaves(arg)
  }
  if len(sizes) != 1:
    raise ValueError(
        'Per-client arguments must share one leading cohort axis; got sizes '
        f'{sorted(sizes) or "none (no per-client argument)"}.'
    )
  return sizes.pop()


def _check_axes(args: Sequence[PyTree], in_axes: Sequence[int | None]) -> None:
  if len(args) != len(in_axes):
    raise ValueError(f'in_axes has {len(in_axes)} entries for {len(args)} arguments.')
  if any(axis not in (0, None) for axis in in_axes):
    raise ValueError(f'in_axes entries must be 0 (per client) or None (broadcast); got {in_axes}.')


def _caller(fn, in_axes):
  """``call(broadcast, mapped)`` -> ``fn(*args)`` with the arguments put back in order."""

  def call(broadcast, mapped):
    b, m = iter(broadcast), iter(mapped)
    return fn(*(next(m) if ax == 0 else next(b) for ax in in_axes))

  return call


def _pad(tree: PyTree, num_clients: int, padded: int) -> PyTree:
  if padded == num_clients:
    return tree
  return jax.tree.map(
      lambda x: jnp.concatenate([x, jnp.zeros((padded - num_clients,) + x.shape[1:], x.dtype)]), tree
  )


def _in_chunks(tree: PyTree, num_clients: int, chunk: int) -> PyTree:
  """``[n, ...]`` -> ``[num_chunks, chunk, ...]``, padding the cohort with zero clients."""
  padded = -(-num_clients // chunk) * chunk
  return jax.tree.map(
      lambda x: x.reshape((-1, chunk) + x.shape[1:]), _pad(tree, num_clients, padded)
  )


def _masked(valid, tree: PyTree) -> PyTree:
  """Zeros where ``valid`` (``[n]``) is False, along the leading axis; NaN-safe."""

  def one(x):
    keep = valid.reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(keep, x, jnp.zeros_like(x))

  return jax.tree.map(one, tree)


# ----- step groups (ragged clients) --------------------------------------------------------------

_MAX_GROUPS = 12  # more groups cut little more waste but lengthen the program and its compile
_MIN_GROUP = 4  # clients per group at least: narrower groups would leave an accelerator idle
_GRID = 64  # group boundaries fall on 1/64ths of the (per-device) cohort
_WASTE_TARGET = 0.15
# Padding a kept (ratcheted) plan may compute beyond a fresh plan's before a round replans; every
# replan is a new compiled program, which costs many rounds' time, so the bar is high (simulated
# over 100 rounds of sampled EMNIST-like cohorts: 7-16 distinct plans at 100-1,000 clients).
_RATCHET_SLACK = 0.30


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
    previous: StepPlan | None = None,
    grouped: bool = True,
    keep_slack: float = _RATCHET_SLACK,
    max_groups: int = _MAX_GROUPS,
) -> StepPlan:
  """Orders a cohort longest-first and splits it into step groups (see the module docstring).

  Args:
    steps_per_client: ``[num_clients]`` real steps of each client.
    num_shards: devices the cohort is split over. Clients are dealt round-robin from the sorted
      order, so every device gets the same mix of long and short clients and the groups (one
      plan for all devices) fit each of them.
    previous: the last round's plan. Its groups are kept, with budgets raised where this cohort
      needs more, while that computes at most the 15% target or ``keep_slack`` more padding than
      a fresh plan would, so rounds of sampled cohorts settle on a few compiled programs.
    grouped: False gives only the order (``groups`` None).
    keep_slack: see ``previous``; ``inf`` keeps a plan for as long as the cohort size is the same
      (``sequential`` skips padding steps, so its groups only shape memory, never compute).
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
  if previous is not None and previous.groups is not None and (
      sum(c for c, _ in previous.groups) == profile.size and len(previous.groups) <= max_groups
  ):
    # Keep the last plan, its budgets raised where this cohort needs more (a ratchet: after a few
    # rounds the budgets cover the cohorts a sampler draws, and every round reuses one compiled
    # program), unless that computes clearly more padding than a fresh plan.
    kept, start = [], 0
    for count, budget in previous.groups:
      kept.append((count, max(budget, step_budget(profile[start]))))
      start += count
    kept_cost = _group_cost(kept)
    kept_waste = 1.0 - real / (num_shards * kept_cost)
    fresh_waste = 1.0 - real / max(num_shards * cost, 1)
    if kept_waste <= max(_WASTE_TARGET, fresh_waste + keep_slack):
      groups, cost = tuple(kept), kept_cost
  return StepPlan(order, groups, 1.0 - real / max(num_shards * cost, 1), ungrouped)


@contextlib.contextmanager
def _steps_limit(limit: int | None):
  previous = getattr(_local, 'steps_limit', None)
  _local.steps_limit = limit
  try:
    yield
  finally:
    _local.steps_limit = previous


def _step_groups(n: int, config: ExecutionConfig):
  groups = config.step_groups
  if groups is None:
    return None
  if sum(c for c, _ in groups) != n:
    raise ValueError(
        f'step_groups cover {sum(c for c, _ in groups)} clients per device but the cohort has '
        f'{n} per device. Plan the groups for this cohort with cohort.plan_step_groups.'
    )
  return groups


def _step_major(call, broadcast, mapped) -> list[bool]:
  """Which leaves of ``mapped`` the client function hands to :func:`fold_steps` as its steps.

  Found by tracing one client abstractly and recording, in ``fold_steps``, the identity of the
  leaves it loops over. A leaf that reaches it through some other computation is simply not found
  (``fold_steps`` then cuts it per client, which is as exact, but leaves XLA the padded copy).
  """
  leaves, treedef = jax.tree.flatten(mapped)
  found: list[list[bool]] = []

  def probe(*one):
    previous = getattr(_local, 'fold_probe', None)
    _local.fold_probe = set()
    try:
      call(broadcast, jax.tree.unflatten(treedef, one))
      found.append([id(leaf) in _local.fold_probe for leaf in one])
    finally:
      _local.fold_probe = previous
    return ()

  jax.eval_shape(probe, *(jax.ShapeDtypeStruct(x.shape[1:], x.dtype) for x in leaves))
  return found[0]


def _in_groups(run, mapped, valid, groups, combine, step_major):
  """``run(part, valid_part, chunk_cap)`` per group, with the clients' steps cut to the group's
  budget: the leaves in ``step_major`` here, before any loop over clients (so XLA reads them
  straight from a cohort packed in blocks), and everything else in ``fold_steps``."""
  leaves, treedef = jax.tree.flatten(mapped)
  outs, start = [], 0
  for count, budget in groups:
    part = [
        x[start:start + count, :budget] if steps else x[start:start + count]
        for x, steps in zip(leaves, step_major, strict=True)
    ]
    with _steps_limit(budget):
      outs.append(run(jax.tree.unflatten(treedef, part), valid[start:start + count], count))
    start += count
  return jax.tree.map(combine, *outs)


def _run_local(kind, call, broadcast, mapped, valid, strategy, chunk, config):
  """Map (``kind='map'``) or sum over this device's clients, in step groups when planned."""
  n = valid.shape[0]

  def run(part, ok, cap):
    if kind == 'sum':
      return _local_sum(call, broadcast, part, ok, strategy, min(chunk, cap))
    return _local_map(call, broadcast, part, ok.shape[0], strategy, min(chunk, cap))

  groups = _step_groups(n, config)
  if groups is None:
    return run(mapped, valid, n)
  step_major = _step_major(call, broadcast, mapped)
  if kind == 'sum':
    combine = lambda *xs: functools.reduce(jnp.add, xs)  # noqa: E731
  else:
    combine = lambda *xs: jnp.concatenate(xs)  # noqa: E731
  return _in_groups(run, mapped, valid, groups, combine, step_major)


# ----- one device ---------------------------------------------------------------------------------


def _local_map(call, broadcast, mapped, n, strategy, chunk):
  if strategy == 'vmap':
    return jax.vmap(lambda m: call(broadcast, m))(mapped)
  if strategy == 'sequential':
    return jax.lax.map(lambda m: call(broadcast, m), mapped)
  chunked = _in_chunks(mapped, n, chunk)
  out = jax.lax.map(lambda c: jax.vmap(lambda m: call(broadcast, m))(c), chunked)
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:])[:n], out)


def _local_sum(call, broadcast, mapped, valid, strategy, chunk):
  n = valid.shape[0]
  if strategy == 'vmap':
    out = jax.vmap(lambda m: call(broadcast, m))(mapped)
    return jax.tree.map(lambda x: jnp.sum(x, axis=0), _masked(valid, out))
  one = jax.tree.map(lambda x: x[0], mapped)
  out_shape = jax.eval_shape(lambda m: call(broadcast, m), one)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape)
  if strategy == 'sequential':

    def step(total, inputs):
      m, ok = inputs
      out = call(broadcast, m)
      return jax.tree.map(lambda t, o: t + jnp.where(ok, o, jnp.zeros_like(o)), total, out), None

    return jax.lax.scan(step, zeros, (mapped, valid))[0]

  chunked, chunk_valid = _in_chunks((mapped, valid), n, chunk)

  def chunk_step(total, inputs):
    m, ok = inputs
    out = _masked(ok, jax.vmap(lambda c: call(broadcast, c))(m))
    return jax.tree.map(lambda t, o: t + jnp.sum(o, axis=0), total, out), None

  return jax.lax.scan(chunk_step, zeros, (chunked, chunk_valid))[0]


# ----- the public entry points --------------------------------------------------------------------


def _prepare(fn, args, in_axes, config):
  _check_axes(args, in_axes)
  config = config or current_config()
  n = _num_clients(args, in_axes)
  broadcast = tuple(a for a, ax in zip(args, in_axes) if ax is None)
  mapped = tuple(a for a, ax in zip(args, in_axes) if ax == 0)
  return config, n, broadcast, mapped, _caller(fn, tuple(in_axes))


def _leading(tree: PyTree) -> int:
  return jax.tree.leaves(tree)[0].shape[0]


def _sharded(body, m: Mesh, broadcast, mapped, valid, out_spec):
  spec = PartitionSpec(CLIENTS_AXIS)
  return jax.shard_map(
      body,
      mesh=m,
      in_specs=(PartitionSpec(), spec, spec),
      out_specs=out_spec,
      check_vma=False,
  )(broadcast, mapped, valid)


def map_clients(
    fn: Callable[..., PyTree],
    args: Sequence[PyTree],
    in_axes: Sequence[int | None],
    config: ExecutionConfig | None = None,
) -> PyTree:
  """Runs ``fn`` per client; returns its outputs stacked as ``[num_clients, ...]``."""
  config, n, broadcast, mapped, call = _prepare(fn, args, in_axes, config)
  m = mesh(config)
  if m is None:
    strategy, chunk = resolve(n, config)
    return _run_local('map', call, broadcast, mapped, jnp.ones((n,), bool), strategy, chunk, config)
  padded = -(-n // m.size) * m.size
  strategy, chunk = resolve(padded // m.size, config)

  def body(b, shard, valid):
    return _run_local('map', call, b, shard, valid, strategy, chunk, config)

  valid = jnp.arange(padded) < n
  out = _sharded(body, m, broadcast, _pad(mapped, n, padded), valid, PartitionSpec(CLIENTS_AXIS))
  return jax.tree.map(lambda x: x[:n], out)



def sum_clients(
    fn: Callable[..., PyTree],
    args: Sequence[PyTree],
    in_axes: Sequence[int | None],
    config: ExecutionConfig | None = None,
) -> PyTree:
  """Runs ``fn`` per client and returns the sum of its outputs over the cohort.

  Memory stays O(chunk): with ``sequential`` or ``chunked`` the per-client outputs are accumulated
  in the loop and never stacked; sharded, each device sums its share and one ``psum`` adds them.
  """
  config, n, broadcast, mapped, call = _prepare(fn, args, in_axes, config)
  m = mesh(config)
  if m is None:
    strategy, chunk = resolve(n, config)
    return _run_local('sum', call, broadcast, mapped, jnp.ones((n,), bool), strategy, chunk, config)
  padded = -(-n // m.size) * m.size
  strategy, chunk = resolve(padded // m.size, config)

  def body(b, shard, valid):
    local = _run_local('sum', call, b, shard, valid, strategy, chunk, config)
    return jax.tree.map(lambda x: jax.lax.psum(x, CLIENTS_AXIS), local)

  valid = jnp.arange(padded) < n
  return _sharded(body, m, broadcast, _pad(mapped, n, padded), valid, PartitionSpec())


def fold_steps(
    step: Callable[[PyTree, PyTree], PyTree],
    carry: PyTree,
    xs: PyTree,
    active: jax.Array | None = None,
    config: ExecutionConfig | None = None,
) -> PyTree:
  """A client's local loop: ``carry = step(carry, x)`` for each ``x`` along the leading axis of xs.

  Args:
    step: ``(carry, x) -> carry``.
    carry: the initial carry.
    xs: pytree of ``[num_steps, ...]`` arrays.
    active: optional bool ``[num_steps]``: only the active steps take effect, in order. On CPU
      the loop is a ``while_loop`` over the active steps' indices (:func:`_loop_kind`), so its
      trip count is the number of real steps: inactive (padding) steps are never computed, and
      under ``vmap`` (clients side by side) it runs as long as the longest client of the batch,
      clients already done keeping their carry. On accelerators it stays a ``lax.scan`` over
      all steps that skips inactive ones with ``lax.cond`` (under ``vmap``: computes and
      discards them): XLA:GPU runs a loop of known trip count without reading its predicate
      back to the host each step, and can unroll it into a command buffer. Reverse-mode
      differentiation *through* the loop needs that static trip count: pass ``active=None``
      (masking inside ``step``) or use ``execution(unroll_steps=True)``.
      Inside a step group (see :func:`plan_step_groups`) the loop sees only the group's step
      budget: every step past it is padding for every client of the group. The engine may also
      hand the client function its data leaves already cut to the budget, so a client function
      must not depend on how many padding steps its arrays hold (derive per-step keys with
      ``fold_in(key, step)``, not ``split(key, num_steps)``).
    config: overrides the configuration in force.
  """
  config = config or current_config()
  unroll = bool(config.unroll_steps)
  probe = getattr(_local, 'fold_probe', None)
  if probe is not None:  # see _step_major
    probe.update(id(leaf) for leaf in jax.tree.leaves(xs))
  limit = getattr(_local, 'steps_limit', None)
  if limit is not None and active is not None:
    xs, active = jax.tree.map(lambda x: x[:limit] if x.shape[0] > limit else x, (xs, active))
  if active is None:
    return jax.lax.scan(lambda c, x: (step(c, x), None), carry, xs, unroll=unroll)[0]
  if unroll or _loop_kind(config) == 'scan':

    def body(c, inputs):
      x, on = inputs
      return jax.lax.cond(on, lambda c: step(c, x), lambda c: c, c), None

    return jax.lax.scan(body, carry, (xs, active), unroll=unroll)[0]

  # The active steps' indices first, in order (a stable sort), and how many there are. On a packed
  # cohort they are the leading steps, but any mask is exact.
  active = jnp.asarray(active, bool)
  order = jnp.argsort(~active, stable=True).astype(jnp.int32)
  count = jnp.sum(active, dtype=jnp.int32)

  def body(state):
    i, c = state
    x = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, order[i], keepdims=False), xs)
    return i + 1, step(c, x)

  return jax.lax.while_loop(lambda state: state[0] < count, body, (jnp.int32(0), carry))[1]


def _loop_kind(config: ExecutionConfig) -> str:
  """How :func:`fold_steps` loops over a client's masked steps: ``'while'`` over the active ones
  on CPU (no per-step ``cond``; measured 7-11% faster there, benchmarks/RESULTS.md), ``'scan'``
  over all of them elsewhere (a static trip count keeps XLA:GPU from syncing on the loop's
  predicate every step)."""
  return 'while' if _platform(config) == 'cpu' else 'scan'


def lower_forward(fn: Callable, config: ExecutionConfig | None = None) -> Callable:
  """``fn`` (a model's forward pass over arrays) with the lowering that is fast on this backend."""
  config = config or current_config()
  mode = config.conv_lowering
  if mode == 'auto':
    mode = 'native' if jax.default_backend() == 'cpu' else 'xla'
  if mode == 'native':
    return lowering.native_convolutions(fn)
  return lowering.im2col_convolutions(fn) if mode == 'im2col' else fn


class CohortTooLargeError(MemoryError):
  """A compiled round needs more memory than the device has; the message names the fix."""


def _device_memory_limit(device) -> int | None:
  try:
    stats = device.memory_stats() or {}
  except Exception:  # some backends keep no statistics
    stats = {}
  if 'bytes_limit' in stats:
    return int(stats['bytes_limit'])
  if device.platform == 'cpu':
    try:
      with open('/proc/meminfo') as f:
        for line in f:
          if line.startswith('MemAvailable:'):
            return int(line.split()[1]) * 1024
    except OSError:
      return None
  return None


def _bytes(n: float) -> str:
  for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
    if n < 1024 or unit == 'TiB':
      return f'{n:.1f} {unit}'
    n /= 1024


def _needed_bytes(compiled) -> int | None:
  try:
    analysis = compiled.memory_analysis()
  except Exception:  # not every backend reports it
    return None
  if analysis is None:
    return None
  return int(
      analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
  )


def compile_within_memory(compile_with: Callable[[ExecutionConfig], Any], num_clients: int,
                          config: ExecutionConfig | None = None):
  """Compiles a round and makes sure it fits in device memory before it ever runs.

  ``compile_with(config)`` traces and compiles under ``config``. XLA's estimate of the compiled
  program (arguments + outputs + temporaries) is compared with the device's memory (on CPU, the
  host's available memory). When it does not fit, smaller chunks are compiled (halving) until one
  fits: under ``auto`` that program is used; under an explicit strategy a
  :class:`CohortTooLargeError` names the chunk size that was verified to fit, so nothing dies
  with an opaque out-of-memory error mid-run.
  """
  config = config or current_config()
  compiled = compile_with(config)
  here = jax.process_index()
  device = next(d for d in (config.devices or jax.devices()) if d.process_index == here)
  limit = _device_memory_limit(device)
  needed = _needed_bytes(compiled)
  if limit is None or needed is None or needed <= 0.9 * limit:
    return compiled
  strategy, chunk = resolve(num_clients, config)
  while chunk > 1:
    chunk //= 2
    smaller = dataclasses.replace(config, strategy='chunked', chunk_size=chunk)
    candidate = compile_with(smaller)
    if (_needed_bytes(candidate) or 0) <= 0.9 * limit:
      if config.strategy == 'auto':
        return candidate
      raise CohortTooLargeError(
          f'This round needs about {_bytes(needed)} but the {device.platform} device has '
          f'{_bytes(limit)} ({num_clients} clients, strategy {strategy!r}). It fits when run as '
          f"cohort.execution('chunked', chunk_size={chunk}) (checked)."
      )
  raise CohortTooLargeError(
      f'This round needs about {_bytes(needed)} but the {device.platform} device has '
      f'{_bytes(limit)} ({num_clients} clients), and even one client at a time does not fit: the '
      'cohort data itself is too large. Split the cohort into smaller rounds, use fewer steps per '
      'client, or a device with more memory.'
  )
