"""What compressed client values cost on the wire: bits per client against float32, and checks.

The compression aggregators (:mod:`~fedjax_like.aggregators.quantization`,
:mod:`~fedjax_like.aggregators.sparsification`; :mod:`~fedjax_like.aggregators.rotation` reshapes
values for them) simulate the compression: a client's value is encoded and decoded inside the
compiled round, and what the server would have received is summed. The bits a client would send
depend only on the value type, so they are computed here, once, when a process is created, and
reported every round as measurements:

    bits_per_client          the bits one client sends (compressed tensors as encoded, the others
                             as float32)
    float32_bits_per_client  32 x the number of elements of the value the compressor receives
    compression_ratio        float32_bits_per_client / bits_per_client

Wire formats counted (information content; no container or entropy coding):

- uniform quantization to ``b`` bits: ``b`` per element, plus 64 for the tensor's float32
  ``[min, max]`` when the range is the client's own (none with a fixed ``min_max``);
- top-k sparsification: ``k x (32 + ceil(log2(n)))`` for a tensor of ``n`` elements (each kept
  value in float32 and its index);
- a tensor left uncompressed (at most ``threshold`` elements): ``32 n``.

Measurements are float32 scalars (bits of large models overflow int32).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from fedjax_like.aggregators.factory import format_type

PyTree = Any


def num_elements(spec) -> int:
  """The number of elements of a ``jax.ShapeDtypeStruct`` (or array)."""
  return int(math.prod(spec.shape))


def check_threshold(threshold) -> int:
  """``threshold`` if it is a non-negative int (tensors with more elements are compressed)."""
  if isinstance(threshold, bool) or not isinstance(threshold, int):
    raise TypeError(f'threshold must be an int; got {type(threshold).__name__}.')
  if threshold < 0:
    raise ValueError(
        f'threshold must be non-negative: tensors with MORE than threshold elements are '
        f'compressed; got {threshold}.'
    )
  return threshold


def compressed_leaves(value_type: PyTree, threshold: int) -> list[bool]:
  """For each leaf of ``value_type`` (in ``jax.tree.leaves`` order): compressed or not."""
  return [num_elements(x) > threshold for x in jax.tree.leaves(value_type)]


def bits_measurements(value_type: PyTree, compressed_bits: Callable[[int], int],
                      threshold: int) -> dict[str, jax.Array]:
  """``{bits_per_client, float32_bits_per_client, compression_ratio}`` for ``value_type``.

  Args:
    value_type: one client's value type (what the compressor receives).
    compressed_bits: ``n -> bits`` sent for a compressed tensor of ``n`` elements.
    threshold: tensors with at most this many elements go uncompressed (32 bits each).
  """
  sizes = [num_elements(x) for x in jax.tree.leaves(value_type)]
  sent = sum(compressed_bits(n) if n > threshold else 32 * n for n in sizes)
  full = 32 * sum(sizes)
  return {
      'bits_per_client': jnp.asarray(float(sent), jnp.float32),
      'float32_bits_per_client': jnp.asarray(float(full), jnp.float32),
      'compression_ratio': jnp.asarray(full / sent if sent else 1.0, jnp.float32),
  }


def check_inner(factory, what: str = 'inner_agg_factory') -> None:
  """A TypeError unless ``factory`` is an aggregation factory."""
  if not hasattr(factory, 'create') or not hasattr(factory, 'is_weighted'):
    raise TypeError(
        f'{what} must be an aggregation factory (with create(value_type) and is_weighted), e.g. '
        f'SumFactory() or MeanFactory(); got {type(factory).__name__}.'
    )


def check_float_values(value_type: PyTree, who: str) -> None:
  """A TypeError unless every leaf of ``value_type`` is floating-point."""
  leaves = jax.tree.leaves(value_type)
  if not leaves or not all(jnp.issubdtype(x.dtype, jnp.floating) for x in leaves):
    raise TypeError(
        f'{who} compresses floating-point values; got the value type {format_type(value_type)}.'
    )
