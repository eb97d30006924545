"""The runtime: the one object that decides how a federated computation executes.

A :class:`Runtime` holds the execution config, the device mesh, the cohort planning and packing
(step groups or lanes: :mod:`.plan`), placement, the compile cache and the memory check. Builders
take one (``build_weighted_fed_avg(..., runtime=fl.Runtime('vmap'))``); without one a process
uses the runtime in force when ``next`` is called (``with cohort.execution('vmap'): ...`` builds
one, the default is :func:`default_runtime`: ``auto``).

Inside a traced computation the runtime travels with the values: every federated value carries
its :class:`Engine` (the runtime's config, hashable), and the Federated Core reaches the engine
only through the protocol below. Nothing in the hot path reads ambient state.

    engine.run(program)   -> (summed, stacked): the program's output per client is a pair
                             (to_sum, to_stack); one pass over the clients gives the sum of the
                             first over the real clients and the second stacked [clients, ...]
    engine.map(program) / engine.sum(program)   both are ``run``

``run`` splits the program's arguments by ``in_axes``, pads and shards the cohort over the mesh,
resolves the strategy (``auto``; ``lanes`` only for a client loop over lane-planned data), lowers
the loop's ``step`` for the backend once (:mod:`.lowering`), and calls the runner
(:mod:`.runners`, :mod:`.lanes`) on each device's share.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_like.core.engine import host, lowering, memory, place, plan, stream
from fedjax_like.core.engine.config import ExecutionConfig, resolve
from fedjax_like.core.engine.lanes import CohortData, run_lanes
from fedjax_like.core.engine.program import Program, output_type, split_args
from fedjax_like.core.engine.runners import pad_clients, run_local

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Engine:
  """A runtime's execution config as the traced computation sees it (hashable)."""

  config: ExecutionConfig = ExecutionConfig()

  def map(self, program: Program) -> PyTree:
    """Every client's output, stacked ``[clients, ...]``."""
    return self.run(program.then(lambda out: ((), out)))[1]

  def sum(self, program: Program) -> PyTree:
    """The sum of the clients' outputs (padding clients, masked in the program, add zeros)."""
    return self.run(program.then(lambda out: (out, ())))[0]

  def run(self, program: Program) -> tuple[PyTree, PyTree]:
    """Runs ``program`` over its cohort in one pass; its output per client is a pair ``(to_sum,
    to_stack)``. Returns ``(sum of to_sum over the real clients, to_stack [clients, ...])``."""
    config = self.config
    n = program.num_clients
    broadcast, mapped = split_args(program)
    data = program.data if program.data is not None else ()
    has_steps = program.step is not None and bool(jax.tree.leaves(data))
    step = lowering.lower(program.step, config.lowering, config.dense) if has_steps else None
    lanes_shape = getattr(data, 'lane_shape', None)

    def local(b, share, ok):
      m, d = share
      strategy, chunk = resolve(ok.shape[0], config, has_steps)
      if strategy == 'lanes' and lanes_shape is not None:
        return run_lanes(program, b, m, d, ok, shape=lanes_shape, step=step)
      if strategy == 'lanes':
        strategy = 'vmap'
      return run_local(
          program, b, m, d, ok, strategy=strategy, chunk=chunk, kind=config.loop_kind,
          groups=getattr(d, 'step_groups', None), step=step,
      )

    m = place.mesh(config)
    if getattr(data, 'stream', None) is not None:
      if m is not None:
        raise ValueError('A streamed cohort runs on one device; shard=False, or pack it in memory.')
      return self._run_streamed(program, broadcast, mapped, data, has_steps, step)
    if m is None:
      return local(broadcast, (mapped, data), jnp.ones((n,), bool))
    padded = -(-n // m.size) * m.size
    valid = jnp.arange(padded) < n
    share = pad_clients((mapped, data), n, padded)
    summed, stacked = place.sharded(local, m, broadcast, share, valid)
    return summed, jax.tree.map(lambda x: x[:n], stacked)


  def _run_streamed(self, program, broadcast, mapped, data, has_steps, step):
    """A streamed cohort, chunk after chunk (:mod:`.stream`), each chunk with the strategy in
    force (``lanes`` runs chunks vectorized)."""
    config = self.config
    chunk_clients = max(c for _, c, _ in data.stream.segments)
    strategy, chunk = resolve(chunk_clients, config, has_steps)
    strategy = 'vmap' if strategy == 'lanes' else strategy
    to_sum, to_stack = output_type(program)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), to_sum)

    def run_chunk(m, d, valid):
      return run_local(program, broadcast, m, d, valid, strategy=strategy,
                       chunk=min(chunk, valid.shape[0]), kind=config.loop_kind, step=step)

    return stream.run_streamed(run_chunk, mapped, data, zeros, to_stack)


def _computed_waste(steps: np.ndarray, layout, shards: int, by_budget: bool) -> float:
  """Masked / computed steps of a vectorized round over step-group ``layout``'s blocks: clients
  side by side loop, per device, as long as the longest of them (``while``) or over the block's
  budget (``scan``). Chunks within a block may stop earlier, so under ``chunked`` an upper bound."""
  computed = 0
  longest = int(steps.max(initial=0))
  for rows, budget in layout:
    for part in np.array_split(steps[rows], shards):
      length = (budget or longest) if by_budget else int(part.max(initial=0))
      computed += len(part) * length
  return 1.0 - float(steps.sum()) / computed if computed else 0.0


@dataclasses.dataclass(frozen=True)
class CohortLayout:
  """How a round's cohort is packed (:meth:`Runtime.layout`).

  Attributes:
    blocks: ``((client indices, num_steps | None), ...)``: the blocks to pack, whose
      concatenation (device-major on a mesh) is the cohort in the order the engine runs it.
    step_groups: per device, the step groups over those blocks, or None.
    lanes: a :class:`~.plan.LanePlan` when the cohort runs in lanes, else None.
    padding_waste: masked / computed steps for the round (0 under ``sequential``).
    packed_steps: client-steps in the packed blocks (each block's clients times its width): the
      host size of the packed cohort in steps.
  """

  blocks: tuple
  step_groups: tuple | None
  lanes: plan.LanePlan | None
  padding_waste: float | None
  packed_steps: int = 0


class Runtime:
  """How federated computations execute (see the module docstring).

  Args:
    strategy: one of :data:`~.config.STRATEGIES`, or an :class:`ExecutionConfig`.
    **options: the other fields of :class:`ExecutionConfig` (``chunk_size``, ``unroll_steps``,
      ``conv_lowering``, ``dense_lowering``, ``shard``, ``devices``, ``max_lanes``).
  """

  def __init__(self, strategy: str | ExecutionConfig = 'auto', **options):
    if isinstance(strategy, ExecutionConfig):
      config = dataclasses.replace(strategy, **options) if options else strategy
    else:
      config = ExecutionConfig(strategy, **options)
    self.config = config
    self.engine = Engine(config)
    self._compiled: dict = {}
    self._layouts: dict = {}  # (steps, streamed, shards, loop kind) -> CohortLayout: the last 64

  def __repr__(self) -> str:
    return f'Runtime({self.config})'

  @property
  def mesh(self):
    return place.mesh(self.config)

  @property
  def num_shards(self) -> int:
    return place.num_shards(self.config)

  def strategy_for(self, num_clients: int, has_steps: bool = True) -> str:
    """The strategy one device runs ``num_clients`` clients with (``auto`` resolved)."""
    return resolve(-(-num_clients // self.num_shards), self.config, has_steps)[0]

  # ----- planning -----------------------------------------------------------------------------

  def layout(self, steps: np.ndarray, streamed: bool = False) -> CohortLayout:
    """How to pack a cohort whose clients have ``steps`` real steps: a function of ``steps``
    alone (and the devices), so a resumed run packs every round exactly as the first run did.
    ``streamed``: step groups even where the strategy would run lanes (a streamed cohort)."""
    shards = self.num_shards
    key = (steps.dtype.str, steps.tobytes(), streamed, shards, self.config.loop_kind)
    layout = self._layouts.get(key)
    if layout is None:
      if len(self._layouts) >= 64:
        self._layouts.pop(next(iter(self._layouts), None), None)
      steps = np.asarray(steps, np.int64)
      layout = self._plan(steps, streamed, shards)
      packed = sum(np.asarray(rows).size * (budget if budget is not None else
                                            int(steps[np.asarray(rows)].max(initial=0)))
                   for rows, budget in layout.blocks)
      layout = self._layouts[key] = dataclasses.replace(layout, packed_steps=packed)
    return layout

  def _plan(self, steps: np.ndarray, streamed: bool, shards: int) -> CohortLayout:
    n = steps.size
    strategy = self.strategy_for(n)
    if strategy == 'lanes' and not streamed:
      lanes = plan.plan_lanes(steps, shards, self.config.max_lanes)
      return CohortLayout(((lanes.order, None),), None, lanes, lanes.waste)
    grouped = strategy != 'sequential' or n // shards >= 64 or streamed
    # Under sequential padding steps are skipped, so groups only save memory, and each costs one
    # more copy of the client program to compile: none for small cohorts, a few for large ones.
    max_groups = 4 if strategy == 'sequential' else plan._MAX_GROUPS
    groups = plan.plan_step_groups(steps, shards, grouped=grouped, max_groups=max_groups)
    if groups.groups is None:
      blocks = ((groups.order, None),)
    else:
      per_device = groups.order.reshape(shards, -1)
      blocks, start = [], 0
      for count, budget in groups.groups:
        blocks.append((per_device[:, start:start + count].reshape(-1), budget))
        start += count
      blocks = tuple(blocks)
    if strategy == 'sequential':
      waste = 0.0  # padding steps are skipped, not computed
    else:
      waste = _computed_waste(steps, blocks, shards, self.config.loop_kind == 'scan')
    return CohortLayout(blocks, groups.groups, None, waste)

  def cohort_data(self, batches, mask, layout: CohortLayout, lanes=None) -> CohortData:
    """The packed cohort as the :class:`CohortData` the engine steps over (traced).

    Args:
      batches: leaves ``[clients, steps, batch_size, ...]``, in the layout's order.
      mask: bool ``[clients, steps, batch_size]``.
      layout: the round's :class:`CohortLayout`.
      lanes: under lanes, the layout's ``(lane, start, rank)`` int32 ``[clients]`` arrays passed
        as arguments of the compiled round (so a new cohort of the same lane shape reuses it);
        :meth:`lane_arrays` gives them.
    """
    if layout.lanes is not None:
      if lanes is None:
        raise ValueError('A cohort laid out in lanes needs its lane arrays (Runtime.lane_arrays).')
      return CohortData(batches, mask, tuple(lanes), lane_shape=layout.lanes.shape)
    return CohortData(batches, mask, None, step_groups=layout.step_groups)

  @staticmethod
  def lane_arrays(layout: CohortLayout) -> tuple:
    """``(lane, start, rank)`` int32 ``[positions]`` of a lane layout, else ``()``."""
    if layout.lanes is None:
      return ()
    return tuple(np.asarray(a, np.int32) for a in (layout.lanes.lane, layout.lanes.start,
                                                    layout.lanes.rank))

  @staticmethod
  def positions(layout: CohortLayout) -> int | None:
    """The clients (padding included) a lane layout runs, else None (the cohort's own size)."""
    return None if layout.lanes is None else int(layout.lanes.lane.shape[0])

  # ----- a round ------------------------------------------------------------------------------

  def run_round(self, fn: Callable, key: Any, replicated: PyTree, source, per_client: tuple = (),
                stacked_by=()) -> host.RoundRun:
    """Plans, packs, places, compiles (cached) and runs ``fn(engine, replicated, data,
    *per_client)`` over the cohort ``source`` (see :func:`.host.run_round`)."""
    return host.run_round(self, fn, key, replicated, source, per_client, stacked_by)

  # ----- placement and compilation ------------------------------------------------------------

  def place(self, per_client: PyTree, replicated: PyTree):
    """``(per_client, replicated)`` on the mesh (see :func:`.place.place_cohort`)."""
    return place.place_cohort(per_client, replicated, self.config)

  def compile(self, fn: Callable, args: tuple, key: Any, num_clients: int,
              stacked_by=()):
    """``jax.jit(fn)`` compiled for ``args``, cached under ``key`` (the caller's identity of
    ``fn`` plus any static layout) and the arguments' shapes, dtypes and shardings, and checked to
    fit in device memory before it runs (:func:`.memory.compile_within_memory`). ``fn(engine,
    *args)`` receives the :class:`Engine` to run its clients with."""
    leaves, structure = jax.tree.flatten(args)
    full_key = (key, structure, tuple(
        (np.shape(x), np.dtype(x.dtype), getattr(x, 'sharding', None)) for x in leaves))
    compiled = self._compiled.get(full_key)
    if compiled is None:

      def compile_with(config):
        engine = Engine(config)
        return jax.jit(lambda *a: fn(engine, *a)).lower(*args).compile()

      compiled = memory.compile_within_memory(compile_with, num_clients, self.config, stacked_by)
      self._compiled[full_key] = compiled
    return compiled


# ----- the runtime in force ---------------------------------------------------------------------

_local = threading.local()
_DEFAULTS: dict = {}


def default_runtime() -> Runtime:
  """The runtime in force: the innermost :func:`using` block's, else ``Runtime('auto')``."""
  current = getattr(_local, 'runtime', None)
  if current is not None:
    return current
  return _runtime_for(ExecutionConfig())


def _runtime_for(config: ExecutionConfig) -> Runtime:
  """One runtime per config, so repeated ``execution(...)`` blocks share its compile cache."""
  runtime = _DEFAULTS.get(config)
  if runtime is None:
    runtime = _DEFAULTS[config] = Runtime(config)
  return runtime


@contextlib.contextmanager
def using(runtime: Runtime | ExecutionConfig) -> Iterator[Runtime]:
  """Puts ``runtime`` in force for the computations called inside the block."""
  if isinstance(runtime, ExecutionConfig):
    runtime = _runtime_for(runtime)
  previous = getattr(_local, 'runtime', None)
  _local.runtime = runtime
  try:
    yield runtime
  finally:
    _local.runtime = previous


def execution(strategy: str = 'auto', **options):
  """Sugar: ``with execution('vmap', chunk_size=...)`` puts a runtime of that config in force.

  Read at the boundary (``process.next``, a computation's call), never while tracing.
  """
  return using(ExecutionConfig(strategy, **options))
