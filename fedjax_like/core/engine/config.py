"""How clients execute: the :class:`ExecutionConfig` and the rule that resolves ``auto``.

=============  =============================================================================
``vmap``       the whole cohort side by side in one vectorized program
``sequential`` one client at a time in a compiled loop; O(1) memory in the cohort
``chunked``    ``chunk_size`` clients at a time, vmapped inside a compiled loop; O(chunk) memory
``lanes``      clients bin-packed by step count into vmap lanes, each lane running its clients
               back to back in one compiled loop (:mod:`.lanes`): ragged cohorts vectorized with
               little padding
=============  =============================================================================

``auto`` is ``sequential`` on CPU; on accelerators, ``lanes`` for client loops over ragged data
(see :func:`resolve`), ``vmap`` up to 256 clients per device otherwise, then ``chunked``.
"""

from __future__ import annotations

import dataclasses

import jax

STRATEGIES = ('auto', 'vmap', 'sequential', 'chunked', 'lanes')
CONV_LOWERINGS = ('auto', 'native', 'im2col', 'xla')
DENSE_LOWERINGS = ('auto', 'native', 'xla')

# Above this many clients per device, `auto` stops materializing the whole cohort side by side.
AUTO_VMAP_LIMIT = 256


@dataclasses.dataclass(frozen=True)
class ExecutionConfig:
  """How clients execute (hashable: part of every compile key).

  Attributes:
    strategy: one of ``STRATEGIES``.
    chunk_size: clients per chunk for ``chunked`` (and the chunk ``auto`` uses for large cohorts).
    unroll_steps: unroll each client's local-step loop into straight-line code (True) or keep it a
      compiled loop (False, the default).
    conv_lowering: ``'native'`` (the direct-convolution kernels of :mod:`.native`, im2col where
      they do not apply or cannot be built), ``'im2col'``, ``'xla'``, or ``'auto'`` (native on
      CPU, XLA's own elsewhere).
    dense_lowering: ``'native'`` (the dense-product kernels of :mod:`.dense` where they apply),
      ``'xla'``, or ``'auto'`` (native on CPU, XLA's own elsewhere).
    shard: split the cohort over devices: True, False, or None (when more than one device).
    devices: the devices to shard over (default: all of ``jax.devices()``).
    max_lanes: the most lanes per device the ``lanes`` runner packs (default 256).
    stream: stream the cohort's data from the host chunk by chunk (:mod:`.stream`): True, False,
      or None (when its packed blocks would exceed ``stream_bytes``, on one device).
    stream_chunk: clients per streamed chunk (default: as many as fit in 64 MiB).
    stream_bytes: the packed size above which ``stream=None`` streams (default 1 GiB).
  """

  strategy: str = 'auto'
  chunk_size: int | None = None
  unroll_steps: bool | None = None
  conv_lowering: str = 'auto'
  dense_lowering: str = 'auto'
  shard: bool | None = None
  devices: tuple | None = None
  max_lanes: int | None = None
  stream: bool | None = None
  stream_chunk: int | None = None
  stream_bytes: int | None = None

  def __post_init__(self):
    if self.strategy not in STRATEGIES:
      raise ValueError(f'Unknown execution strategy {self.strategy!r}; choose one of {STRATEGIES}.')
    for name in ('chunk_size', 'max_lanes', 'stream_chunk', 'stream_bytes'):
      value = getattr(self, name)
      if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f'{name} must be a positive integer; got {value!r}.')
    if self.conv_lowering not in CONV_LOWERINGS:
      raise ValueError(
          f'Unknown conv_lowering {self.conv_lowering!r}; choose one of {CONV_LOWERINGS}.'
      )
    if self.dense_lowering not in DENSE_LOWERINGS:
      raise ValueError(
          f'Unknown dense_lowering {self.dense_lowering!r}; choose one of {DENSE_LOWERINGS}.'
      )
    if self.devices is not None:
      object.__setattr__(self, 'devices', tuple(self.devices))

  @property
  def platform(self) -> str:
    """The platform the computation runs on: that of the config's devices, else the default's."""
    return (self.devices or jax.devices())[0].platform

  @property
  def loop_kind(self) -> str:
    """How a client's steps loop: ``'while'`` over its real steps on CPU (no per-step ``cond``;
    a vectorized group runs as long as its longest member), ``'scan'`` over the step budget
    elsewhere (a static trip count keeps XLA:GPU from reading the loop predicate back every
    step), ``'unrolled'`` when ``unroll_steps``."""
    if self.unroll_steps:
      return 'unrolled'
    return 'while' if self.platform == 'cpu' else 'scan'

  @property
  def lowering(self) -> str:
    """The convolution lowering in force: ``'native'``, ``'im2col'`` or ``'xla'``."""
    if self.conv_lowering != 'auto':
      return self.conv_lowering
    return 'native' if self.platform == 'cpu' else 'xla'

  @property
  def dense(self) -> str:
    """The dense-product lowering in force: ``'native'`` or ``'xla'``."""
    if self.dense_lowering != 'auto':
      return self.dense_lowering
    return 'native' if self.platform == 'cpu' else 'xla'


def resolve(num_clients: int, config: ExecutionConfig, has_steps: bool = False) -> tuple[str, int]:
  """The concrete ``(strategy, chunk_size)`` for ``num_clients`` clients on one device.

  ``auto`` on CPU is ``sequential`` (it runs at or above the plain SGD step's speed for every
  model measured: padding steps are skipped and nothing is batched that XLA:CPU would run slower
  batched). On accelerators a client loop over data (``has_steps``) runs in ``lanes``; any other
  per-client function in ``vmap`` up to 256 clients per device, then ``chunked`` in chunks of 256.
  ``lanes`` asked for a computation without steps is ``vmap``.
  """
  strategy, chunk = config.strategy, config.chunk_size
  if strategy == 'auto':
    if config.platform == 'cpu' and chunk is None:
      strategy = 'sequential'
    elif has_steps and chunk is None:
      strategy = 'lanes'
    elif num_clients <= AUTO_VMAP_LIMIT and chunk is None:
      strategy = 'vmap'
    else:
      strategy, chunk = 'chunked', chunk or min(num_clients, AUTO_VMAP_LIMIT)
  if strategy == 'lanes' and not has_steps:
    strategy = 'vmap'
  if strategy == 'chunked':
    chunk = min(chunk or 16, max(num_clients, 1))
  return strategy, chunk or max(num_clients, 1)
