"""The cohort engine: the one place that decides how a per-client function runs over a cohort.

Every federated computation reaches the clients through two calls:

- :func:`map_clients` runs ``fn`` once per client and returns the outputs stacked on a leading
  cohort axis ``[num_clients, ...]``;
- :func:`sum_clients` runs ``fn`` once per client and returns only the *sum* of the outputs. A
  weighted mean is a sum of ``(w * x, w)`` pairs, so aggregation never needs the stacked outputs and
  memory can stay O(chunk) however large the cohort is.

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

``auto`` picks one. Users override with ``with cohort.execution('chunked', chunk_size=64): ...``
(read when a computation is traced) or per process. Algorithms never call ``vmap`` themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any
STRATEGIES = ('auto', 'vmap', 'sequential', 'chunked')


@dataclasses.dataclass(frozen=True)
class ExecutionConfig:
  """How clients execute.

  Attributes:
    strategy: one of ``STRATEGIES``.
    chunk_size: clients per chunk for ``chunked`` (and the chunk ``auto`` uses for large cohorts).
  """

  strategy: str = 'auto'
  chunk_size: int | None = None
  unroll_steps: bool | None = None

  def __post_init__(self):
    if self.strategy not in STRATEGIES:
      raise ValueError(f'Unknown execution strategy {self.strategy!r}; choose one of {STRATEGIES}.')
    if self.chunk_size is not None and (not isinstance(self.chunk_size, int) or self.chunk_size < 1):
      raise ValueError(f'chunk_size must be a positive integer; got {self.chunk_size!r}.')


_local = threading.local()


def current_config() -> ExecutionConfig:
  """The configuration in force (set by :func:`execution`), else ``auto``."""
  return getattr(_local, 'config', None) or ExecutionConfig()


@contextlib.contextmanager
def execution(
    strategy: str = 'auto', chunk_size: int | None = None, unroll_steps: bool | None = None
) -> Iterator[ExecutionConfig]:
  """Sets how clients execute for computations traced inside the block.

  Args:
    strategy: one of ``STRATEGIES``.
    chunk_size: clients per chunk (``chunked``).
    unroll_steps: unroll each client's local-step loop into straight-line code (True) or keep it a
      compiled loop (False); None lets the engine choose.
  """
  previous = getattr(_local, 'config', None)
  _local.config = ExecutionConfig(strategy, chunk_size, unroll_steps)
  try:
    yield _local.config
  finally:
    _local.config = previous


# Above this many clients, `auto` stops materializing the whole cohort side by side.
_AUTO_VMAP_LIMIT = 256


def resolve(num_clients: int, config: ExecutionConfig | None = None) -> tuple[str, int]:
  """The concrete ``(strategy, chunk_size)`` for a cohort of ``num_clients``."""
  config = config or current_config()
  strategy, chunk = config.strategy, config.chunk_size
  if strategy == 'auto':
    if num_clients <= _AUTO_VMAP_LIMIT and chunk is None:
      strategy = 'vmap'
    else:
      strategy, chunk = 'chunked', chunk or min(num_clients, _AUTO_VMAP_LIMIT)
  if strategy == 'chunked':
    chunk = min(chunk or 16, num_clients)
  return strategy, chunk or num_clients


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


def _split(args, in_axes):
  """Separates per-client arguments (scanned over) from broadcast ones (closed over)."""
  mapped = tuple(a for a, ax in zip(args, in_axes) if ax == 0)

  def call(fn, client_slice):
    it = iter(client_slice)
    return fn(*(next(it) if ax == 0 else a for a, ax in zip(args, in_axes)))

  return mapped, call


def _pad_and_chunk(tree: PyTree, num_clients: int, chunk: int) -> tuple[PyTree, jax.Array]:
  """Pads the cohort axis to a multiple of ``chunk`` and reshapes to ``[num_chunks, chunk, ...]``."""
  num_chunks = -(-num_clients // chunk)
  padded = num_chunks * chunk

  def one(x):
    if padded != num_clients:
      x = jnp.concatenate([x, jnp.zeros((padded - num_clients,) + x.shape[1:], x.dtype)])
    return x.reshape((num_chunks, chunk) + x.shape[1:])

  valid = (jnp.arange(padded) < num_clients).reshape(num_chunks, chunk)
  return jax.tree.map(one, tree), valid


def map_clients(
    fn: Callable[..., PyTree],
    args: Sequence[PyTree],
    in_axes: Sequence[int | None],
    config: ExecutionConfig | None = None,
) -> PyTree:
  """Runs ``fn`` per client; returns its outputs stacked as ``[num_clients, ...]``."""
  _check_axes(args, in_axes)
  n = _num_clients(args, in_axes)
  strategy, chunk = resolve(n, config)
  if strategy == 'vmap':
    return jax.vmap(fn, in_axes=tuple(in_axes))(*args)
  mapped, call = _split(args, in_axes)
  if strategy == 'sequential':
    return jax.lax.map(lambda s: call(fn, s), mapped)
  chunked, _ = _pad_and_chunk(mapped, n, chunk)
  out = jax.lax.map(lambda s: jax.vmap(lambda *c: call(fn, c))(*s), chunked)
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:])[:n], out)


def sum_clients(
    fn: Callable[..., PyTree],
    args: Sequence[PyTree],
    in_axes: Sequence[int | None],
    config: ExecutionConfig | None = None,
) -> PyTree:
  """Runs ``fn`` per client and returns the sum of its outputs over the cohort.

  Memory stays O(chunk): with ``sequential`` or ``chunked`` the per-client outputs are accumulated
  in the loop and never stacked. Outputs of padding clients (added to fill the last chunk) are
  replaced by zeros with ``where``, so a NaN computed on padding never leaks into the sum.
  """
  _check_axes(args, in_axes)
  n = _num_clients(args, in_axes)
  strategy, chunk = resolve(n, config)
  if strategy == 'vmap':
    out = jax.vmap(fn, in_axes=tuple(in_axes))(*args)
    return jax.tree.map(lambda x: jnp.sum(x, axis=0), out)
  mapped, call = _split(args, in_axes)
  out_shape = jax.eval_shape(lambda s: call(fn, s), jax.tree.map(lambda x: x[0], mapped))
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape)
  if strategy == 'sequential':

    def step(total, client_slice):
      return jax.tree.map(jnp.add, total, call(fn, client_slice)), None

    return jax.lax.scan(step, zeros, mapped)[0]

  chunked, valid = _pad_and_chunk(mapped, n, chunk)

  def chunk_step(total, inputs):
    chunk_args, chunk_valid = inputs
    out = jax.vmap(lambda *c: call(fn, c))(*chunk_args)

    def masked_sum(x):
      keep = chunk_valid.reshape((-1,) + (1,) * (x.ndim - 1))
      return jnp.sum(jnp.where(keep, x, jnp.zeros_like(x)), axis=0)

    return jax.tree.map(jnp.add, total, jax.tree.map(masked_sum, out)), None

  return jax.lax.scan(chunk_step, zeros, (chunked, valid))[0]


def fold_steps(
    step: Callable[[PyTree, PyTree], PyTree],
    carry: PyTree,
    xs: PyTree,
    config: ExecutionConfig | None = None,
) -> PyTree:
  """A client's local loop: ``carry = step(carry, x)`` for each ``x`` along the leading axis of xs.

  The engine decides whether the loop stays a compiled loop or is unrolled: unrolling trades
  compile time for speed where a backend runs loops of small kernels poorly.
  """
  config = config or current_config()
  unroll = bool(config.unroll_steps)
  return jax.lax.scan(lambda c, x: (step(c, x), None), carry, xs, unroll=unroll)[0]
