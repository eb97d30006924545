"""The memory check: a compiled round must fit in device memory before it ever runs.

XLA's estimate of a compiled program (arguments + outputs + temporaries) is compared with the
device's memory (on CPU, the host's available memory). When it does not fit, smaller chunks are
compiled (halving) until one fits: under ``auto`` that program is used; under an explicit strategy
a :class:`CohortTooLargeError` names the chunk size that was verified to fit. When the program
holds every client's value at once on purpose (an aggregator that needs the stacked updates, such
as a coordinate-wise median), the error names that computation instead of the cohort data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

from fedjax_like.core.engine.config import ExecutionConfig, resolve


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
                          config: ExecutionConfig, stacked_by=()):
  """Compiles a round and makes sure it fits in device memory before it ever runs.

  ``compile_with(config)`` traces and compiles under ``config``. XLA's estimate of the compiled
  program (arguments + outputs + temporaries) is compared with the device's memory (on CPU, the
  host's available memory). When it does not fit, smaller chunks are compiled (halving) until one
  fits: under ``auto`` that program is used; under an explicit strategy a
  :class:`CohortTooLargeError` names the chunk size that was verified to fit, so nothing dies
  with an opaque out-of-memory error mid-run. ``stacked_by`` names the computations of the round
  that hold every client's value at once (e.g. a median aggregator): the error then names them.
  It may be a function returning the names, called after the round has been traced.
  """
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
  if callable(stacked_by):
    stacked_by = stacked_by()
  if stacked_by:
    raise CohortTooLargeError(
        f'This round needs about {_bytes(needed)} but the {device.platform} device has '
        f'{_bytes(limit)} ({num_clients} clients): {", ".join(stacked_by)} needs every client\'s '
        'value at once (memory O(cohort x model)), which no chunk size changes. Use fewer clients '
        'per round, an aggregator that is a sum (e.g. MeanFactory, clipping, DP), or a device with '
        'more memory.'
    )
  raise CohortTooLargeError(
      f'This round needs about {_bytes(needed)} but the {device.platform} device has '
      f'{_bytes(limit)} ({num_clients} clients), and even one client at a time does not fit: the '
      'cohort data itself is too large. Split the cohort into smaller rounds, use fewer steps per '
      'client, or a device with more memory.'
  )
