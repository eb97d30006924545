"""Streamed cohorts: a round over more client data than the host holds at once.

A cohort whose packed blocks would exceed the runtime's host budget (10,000 EMNIST-like clients
are about 7 GB of pixels) is not packed up front. The round is compiled over a *streamed*
:class:`~.lanes.CohortData` that carries no client data, only the plan: ``segments``, one per step
group of the layout, each ``num_chunks`` chunks of ``chunk`` clients padded to the group's step
budget, as many clients as fit in 64 MiB (a block's remainder is a segment of its own, one
smaller chunk, so positions are the
cohort's own and nothing is padded). Inside the compiled round the engine loops over each
segment's chunks; each iteration
fetches its chunk from the host with ``io_callback`` (``[chunk, budget, batch, ...]``), runs it
with the strategy in force and adds its sums to the carry (stacked outputs are written into a
``[clients, ...]`` buffer). On the host a :class:`Feeder` packs chunk ``k + 1`` on a worker thread
while the device runs chunk ``k``, so host memory holds two chunks of data, whatever the cohort's
size.

Which round a callback serves is an argument of the compiled round (an int32 ``token``), looked up
in the feeders registered on the host, so one compiled program serves every round of its layout.
Streaming runs on one device (a sharded mesh packs its blocks in memory).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import itertools
import threading
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

PyTree = Any
STREAM_CHUNK_BYTES = 64 << 20  # a chunk's packed data at most (unless stream_chunk is given)
STREAM_BYTES = 1 << 30  # a packed cohort above this streams (ExecutionConfig.stream_bytes)


@dataclasses.dataclass(frozen=True)
class StreamSpec:
  """The static plan of a streamed cohort (part of the compile key).

  Attributes:
    segments: ``((num_chunks, chunk, num_steps), ...)``, one per step group, in run order.
    step_type: one client step's ``(batches, mask)`` as ``jax.ShapeDtypeStruct`` pytrees
      (``[batch_size, ...]`` and bool ``[batch_size]``).
    num_clients: the cohort's clients (the positions the segments cover).
  """

  segments: tuple[tuple[int, int, int], ...]
  step_type: Any
  num_clients: int

  def chunk_type(self, segment: int) -> PyTree:
    """``(batches, mask)`` of one chunk of ``segment``, as ``jax.ShapeDtypeStruct``s."""
    _, chunk, steps = self.segments[segment]
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct((chunk, steps) + tuple(s.shape), s.dtype), self.step_type
    )


  @property
  def longest(self) -> int:
    return max(steps for _, _, steps in self.segments)


_FEEDERS: dict[int, Feeder] = {}
_TOKENS = itertools.count(1)
_LOCK = threading.Lock()


class Feeder:
  """The host side of one streamed round: packs chunks on demand, one chunk ahead.

  Args:
    take: ``(rows, num_steps) -> (batches, mask)``, the cohort's packer (``CohortSource.take``).
    chunks: per segment, the cohort rows of each chunk.
    spec: the :class:`StreamSpec`.
  """

  def __init__(self, take: Callable, chunks: list[list[np.ndarray]], spec: StreamSpec):
    self._take, self._chunks, self._spec = take, chunks, spec
    self._order = [(s, k) for s, seg in enumerate(chunks) for k in range(len(seg))]
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='fedjax_like-feed')
    self._ahead: dict[tuple[int, int], concurrent.futures.Future] = {}
    with _LOCK:
      self.token = next(_TOKENS) % (2**31 - 1)
      _FEEDERS[self.token] = self
    self._prefetch(0)

  def _pack(self, segment: int, k: int) -> PyTree:
    steps = self._spec.segments[segment][2]
    batches, mask = self._take(self._chunks[segment][k], steps)
    want = self._spec.chunk_type(segment)
    return jax.tree.map(lambda x, s: np.asarray(x, s.dtype), (batches, mask), want)

  def _prefetch(self, index: int) -> None:
    if index < len(self._order) and self._order[index] not in self._ahead:
      self._ahead[self._order[index]] = self._pool.submit(self._pack, *self._order[index])

  def fetch(self, segment: int, k: int) -> PyTree:
    """Chunk ``k`` of ``segment`` (packed ahead when the chunks are asked for in order)."""
    where = (segment, k)
    future = self._ahead.pop(where, None)
    out = future.result() if future is not None else self._pack(segment, k)
    index = self._order.index(where)
    self._prefetch(index + 1)
    if index == len(self._order) - 1:
      self.close()
    return out

  def close(self) -> None:
    with _LOCK:
      _FEEDERS.pop(self.token, None)
    self._pool.shutdown(wait=False)


def _fetch(token, segment, k, *, spec: StreamSpec):
  feeder = _FEEDERS.get(int(token))
  if feeder is None:
    raise RuntimeError(
        f'No host feeder for streamed round {int(token)}: a streamed round runs once, while '
        'its cohort is registered. Run it again through Runtime.run_round.'
    )
  return feeder.fetch(int(segment), int(k))


def chunk_clients(num_steps: int, step_bytes: int, chunk: int | None) -> int:
  """Clients per chunk of a block of ``num_steps`` steps: ``chunk`` when given, else as many as
  fit in :data:`STREAM_CHUNK_BYTES`."""
  if chunk:
    return int(chunk)
  return max(1, STREAM_CHUNK_BYTES // max(int(num_steps) * int(step_bytes), 1))


def plan_chunks(blocks, chunk) -> tuple[list[list[np.ndarray]], tuple]:
  """``(rows of each chunk per segment, segments)`` for the layout's blocks ``((rows,
  num_steps), ...)``: each block cut into chunks of ``chunk`` clients (an int, or a function of
  the block's ``num_steps``), its remainder a segment of one smaller chunk."""
  chunks, segments = [], []
  for rows, steps in blocks:
    size = chunk(steps) if callable(chunk) else chunk
    rows = np.asarray(rows, np.int64)
    full, rest = divmod(rows.size, size)
    if full:
      chunks.append(list(rows[: full * size].reshape(full, size)))
      segments.append((full, size, int(steps)))
    if rest:
      chunks.append([rows[full * size:]])
      segments.append((1, rest, int(steps)))
  return chunks, tuple(segments)


def run_streamed(run_chunk: Callable, mapped: PyTree, data, sum_zeros: PyTree,
                 stack_type: PyTree) -> tuple[PyTree, PyTree]:
  """The streamed cohort's ``(summed, stacked)``: a loop over each segment's chunks.

  Args:
    run_chunk: ``(mapped_chunk, (batches, mask), valid) -> (summed, stacked)`` for one chunk.
    mapped: per-client arguments ``[clients, ...]``, in the stream's order.
    data: the streamed :class:`~.lanes.CohortData` (``token``, ``real`` and ``stream``).
    sum_zeros: zeros of the summed output.
    stack_type: one client's stacked output, as ``jax.ShapeDtypeStruct``s.
  """
  spec: StreamSpec = data.stream
  fetch = functools.partial(_fetch, spec=spec)
  total = sum_zeros
  stacked = jax.tree.map(lambda s: jnp.zeros((spec.num_clients,) + s.shape, s.dtype), stack_type)
  offset = 0
  for segment, (num_chunks, chunk, _) in enumerate(spec.segments):

    def body(k, carry, segment=segment, chunk=chunk, offset=offset):
      total, stacked = carry
      batches, mask = io_callback(
          fetch, spec.chunk_type(segment), data.token, jnp.int32(segment), k
      )
      start = offset + k * chunk
      cut = lambda x: jax.lax.dynamic_slice_in_dim(x, start, chunk)  # noqa: E731
      valid = cut(data.real)
      summed, out = run_chunk(jax.tree.map(cut, mapped), (batches, mask), valid)
      total = jax.tree.map(jnp.add, total, summed)
      stacked = jax.tree.map(
          lambda buf, o: jax.lax.dynamic_update_slice_in_dim(buf, o, start, 0), stacked, out
      )
      return total, stacked

    total, stacked = jax.lax.fori_loop(0, num_chunks, body, (total, stacked))
    offset += num_chunks * chunk
  return total, stacked
