"""The host side of a round: from a cohort on the host to the compiled round's outputs.

A cohort arrives as a :class:`CohortSource` (the data layer provides them:
:class:`fedjax_like.data.cohort_source.CohortSource`): each client's real step count, its id, and
``take(rows, num_steps)``, which packs some clients into ``[rows, num_steps, batch, ...]`` host
arrays (checked against the model). :func:`run_round` then

1. plans the cohort's layout from its step counts alone (:meth:`Runtime.layout`: longest-first
   order, step groups or lanes);
2. packs one block per step group (each padded only to its budget), or, when the cohort's data
   would not fit in the host budget, streams it (:mod:`.stream`);
3. places the blocks on the runtime's mesh and calls the round compiled for that layout (cached by
   the runtime, checked against device memory before it runs); inside, the blocks are joined into
   a :class:`~.lanes.CohortData` carrying the plan, which the engine steps over. A cohort that is
   an unchangeable value used again (``CohortSource.kept``: a read-only packed cohort) keeps its
   placed blocks, so steps 2-3 move no data when it comes back with the same layout.

Per-client inputs of the round (e.g. stored client states) are given in the cohort's order and
reordered here; per-client outputs come back in the layout's order (:attr:`RoundRun.order`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_like.core.engine import lanes, stream

PyTree = Any


class CohortSource(Protocol):
  """A cohort on the host, packed on demand (see the module docstring).

  Attributes:
    steps: int ``[clients]``: each client's real steps.
    client_ids: one id per client.
  """

  steps: np.ndarray
  client_ids: tuple[str, ...]

  def take(self, rows: np.ndarray, num_steps: int | None) -> tuple[PyTree, np.ndarray]:
    """``(batches, mask)`` of clients ``rows``: leaves ``[len(rows), num_steps, batch, ...]``
    and bool ``[len(rows), num_steps, batch]`` (``num_steps`` None: the longest of them)."""

  def kept(self, key: Any, make: Callable[[], Any]) -> Any | None:
    """``make()`` kept with the cohort under ``key`` when the cohort is an unchangeable value
    used again (a read-only packed cohort), so its packed and placed blocks are made once; None
    (and ``make`` not called) when nothing can be kept."""


@dataclasses.dataclass(frozen=True)
class RoundRun:
  """A round's outputs and how its cohort was laid out.

  Attributes:
    outputs: what the round function returned (device arrays; dispatched, maybe not done).
    order: ``order[k]``: the cohort index of the client at position ``k`` of per-client outputs.
    layout: the :class:`~.runtime.CohortLayout`.
    compiled: the compiled round that ran.
  """

  outputs: Any
  order: np.ndarray
  layout: Any
  compiled: Any


def pad_positions(tree: PyTree, size: int) -> PyTree:
  """Host arrays ``[n, ...]`` zero-padded to ``size`` rows (inert clients: no examples)."""

  def pad(x):
    x = np.asarray(x)
    if x.shape[0] >= size:
      return x
    return np.concatenate([x, np.zeros((size - x.shape[0],) + x.shape[1:], x.dtype)])

  return jax.tree.map(pad, tree)


def join_blocks(blocks: tuple, num_shards: int) -> PyTree:
  """Blocks ``[shards * count_g, steps_g, ...]`` (device-major) -> one ``[clients, steps, ...]``
  pytree, zero-padded to the longest block's steps, in the order the engine runs the clients.

  Traced inside the compiled round. The engine slices each step group back out of the joined
  arrays and cuts its data to the group's budget before looping over clients, and XLA folds those
  slices of this concatenation back onto the blocks, so the padded arrays are never materialized.
  """
  if len(blocks) == 1:
    return blocks[0]
  longest = max(jax.tree.leaves(block)[0].shape[1] for block in blocks)

  def pad_steps(x, axis):
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, longest - x.shape[axis])
    return jnp.pad(x, widths)

  def join(*leaves):
    if num_shards == 1:  # no reshapes here: XLA does not fold slices through a unit axis
      return jnp.concatenate([pad_steps(x, 1) for x in leaves], axis=0)
    per_device = [pad_steps(x.reshape((num_shards, -1) + x.shape[1:]), 2) for x in leaves]
    joined = jnp.concatenate(per_device, axis=1)
    return joined.reshape((-1,) + joined.shape[2:])

  return jax.tree.map(join, *blocks)


def run_round(runtime, fn: Callable, key: Any, replicated: PyTree, source: CohortSource,
              per_client: tuple = (), stacked_by=()) -> RoundRun:
  """Runs ``fn(engine, replicated, data, *per_client)`` compiled over the cohort ``source``.

  Args:
    runtime: the :class:`~.runtime.Runtime`.
    fn: the round: ``data`` is the cohort's :class:`~.lanes.CohortData`; pure JAX.
    key: the caller's identity of ``fn`` (with the layout and the inputs' shapes, the compile
      cache key).
    replicated: inputs every device holds (the server state).
    source: the cohort (see :class:`CohortSource`).
    per_client: pytrees of ``[clients, ...]`` host arrays in the cohort's order.
    stacked_by: names (or a function giving them) of what holds every client's value, for the
      memory check's message.
  """
  steps = np.asarray(source.steps)
  layout = runtime.layout(steps)
  if _streams(runtime, layout, source):
    return _run_streamed(runtime, fn, key, replicated, source, per_client, stacked_by)
  order = np.concatenate([np.asarray(rows, np.int64) for rows, _ in layout.blocks])
  per_client = tuple(jax.tree.map(lambda x: np.asarray(x)[order], p) for p in per_client)
  positions = runtime.positions(layout)
  if positions is not None:  # a lane layout packs the cohort as one block, padded to positions
    per_client = tuple(pad_positions(p, positions) for p in per_client)

  def packed_blocks():
    blocks = [source.take(np.asarray(rows), budget) for rows, budget in layout.blocks]
    if positions is not None:
      blocks = [pad_positions(blocks[0], positions)]
    return tuple(b for b, _ in blocks), tuple(m for _, m in blocks)

  # Blocks of a split cohort each hold a multiple of the mesh size, so `place` pads only a single
  # block (a cohort that does not divide evenly over the devices).
  kept = getattr(source, 'kept', None) if jax.process_count() == 1 else None
  placed = None if kept is None else kept(
      ('placed', tuple((np.asarray(r).tobytes(), b) for r, b in layout.blocks), positions,
       runtime.mesh),
      lambda: runtime.place(jax.device_put(packed_blocks()), ())[0])
  lanes = runtime.lane_arrays(layout)
  if placed is not None:  # the rest is placed (and padded over the mesh) from its own size
    batches, mask = placed
    (lanes, *per_client), replicated = runtime.place((lanes, *per_client), replicated)
  else:
    batches, mask = packed_blocks()
    (batches, mask, lanes, *per_client), replicated = runtime.place(
        (batches, mask, lanes, *per_client), replicated
    )
  shards = runtime.num_shards

  def round_from_blocks(engine, replicated, batches, mask, lanes, *rest):
    data = runtime.cohort_data(
        join_blocks(batches, shards), join_blocks(mask, shards), layout, lanes
    )
    return fn(engine, replicated, data, *rest)

  args = (replicated, batches, mask, lanes, *per_client)
  lane_shape = None if layout.lanes is None else layout.lanes.shape
  num_clients = sum(block.shape[0] for block in mask)  # each [clients, steps, batch]
  compiled = runtime.compile(round_from_blocks, args, (key, layout.step_groups, lane_shape),
                             num_clients, stacked_by)
  return RoundRun(compiled(*args), order, layout, compiled)


def _streams(runtime, layout, source) -> bool:
  """Whether this round streams its cohort (see :mod:`.stream` and ``ExecutionConfig.stream``)."""
  config = runtime.config
  if config.stream is False or runtime.num_shards > 1:
    return False
  if config.stream:
    return True
  step_bytes = getattr(source, 'step_bytes', None)
  if not step_bytes:
    return False
  limit = config.stream_bytes or stream.STREAM_BYTES
  return layout.packed_steps * step_bytes > limit


def _run_streamed(runtime, fn, key, replicated, source, per_client, stacked_by) -> RoundRun:
  """:func:`run_round` for a streamed cohort: the data stays on the host and is fed chunk by
  chunk to the compiled round (:mod:`.stream`)."""
  steps = np.asarray(source.steps)
  layout = runtime.layout(steps, streamed=True)
  blocks = tuple(
      (np.asarray(rows), budget if budget is not None else max(int(steps[rows].max()), 1))
      for rows, budget in layout.blocks
  )
  order = np.concatenate([rows for rows, _ in blocks])
  probe_batches, probe_mask = source.take(order[:1], None)
  step_bytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves((probe_batches, probe_mask)))
  step_bytes //= max(np.shape(probe_mask)[1], 1)
  chunks, segments = stream.plan_chunks(
      blocks, lambda steps: stream.chunk_clients(steps, step_bytes, runtime.config.stream_chunk))
  step_type = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x)[2:], np.asarray(x).dtype),
                           (probe_batches, probe_mask))
  spec = stream.StreamSpec(segments, step_type, int(order.size))
  per_client = tuple(jax.tree.map(lambda x: np.asarray(x)[order], p) for p in per_client)
  real = steps[order] > 0
  feeder = stream.Feeder(source.take, chunks, spec)

  def round_from_stream(engine, replicated, token, real, *rest):
    return fn(engine, replicated, lanes.CohortData.streamed(token, real, spec), *rest)

  args = (replicated, np.int32(feeder.token), real, *per_client)
  compiled = runtime.compile(round_from_stream, args, (key, 'stream', spec), int(order.size),
                             stacked_by)
  try:
    outputs = compiled(*args)
  except BaseException:
    feeder.close()
    raise
  return RoundRun(outputs, order, layout, compiled)
