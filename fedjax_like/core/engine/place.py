"""Placement: the device mesh, putting a round's inputs on it, and running a share per device.

With more than one local (or, after ``jax.distributed.initialize``, global) device, the cohort
axis is split over a 1-D mesh (axis ``'clients'``) with ``shard_map``: each device runs its share
with the runner the engine chose and the sums meet in one ``psum``. Padding clients added to fill
the last shard are zero clients, masked out of every reduction. The same code runs across hosts:
every process passes the same host values (as a seeded sampler and packer give) and supplies its
own shards.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fedjax_like.core.engine.config import ExecutionConfig

PyTree = Any
CLIENTS_AXIS = 'clients'


def mesh(config: ExecutionConfig) -> Mesh | None:
  """The 1-D device mesh the cohort is sharded over, or None when it runs on one device."""
  devices = config.devices or tuple(jax.devices())
  if config.shard is False or (config.shard is None and len(devices) < 2):
    return None
  return _mesh_of(tuple(devices))


@functools.lru_cache(maxsize=16)
def _mesh_of(devices: tuple) -> Mesh:
  # One Mesh per device tuple: building one each round costs more than the rest of placement.
  return Mesh(np.array(devices), (CLIENTS_AXIS,))


def num_shards(config: ExecutionConfig) -> int:
  m = mesh(config)
  return m.size if m is not None else 1


def _put(tree: PyTree, sharding) -> PyTree:
  """Host (or local) arrays -> global arrays with ``sharding``; each process supplies its shards.

  In one process this is ``jax.device_put`` (one batched transfer; a no-op for an array already
  placed so, such as the server state of the previous round)."""
  if jax.process_count() == 1:
    leaves, treedef = jax.tree.flatten(tree)
    # Arrays already placed so (the state a previous round returned, a kept cohort) stay as they
    # are; the rest move in one batched transfer.
    moving = [i for i, x in enumerate(leaves)
              if not (isinstance(x, jax.Array) and x.sharding == sharding)]
    if moving:
      for i, x in zip(moving, jax.device_put([leaves[i] for i in moving], sharding), strict=True):
        leaves[i] = x
    return jax.tree.unflatten(treedef, leaves)

  def one(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(one, tree)


def place_cohort(per_client: PyTree, replicated: PyTree, config: ExecutionConfig):
  """Puts a round's inputs on the mesh (a no-op without one).

  Per-client arrays ``[num_clients, ...]`` are padded with zero clients to a multiple of the mesh
  size and split over it; ``replicated`` (the server state) is copied to every device. Zero
  padding clients must be inert for the computation: an all-False mask is (no examples, weight 0).

  Returns:
    ``(per_client, replicated)`` placed.
  """
  m = mesh(config)
  if m is None:
    return per_client, replicated
  leaves = jax.tree.leaves(per_client)
  n = leaves[0].shape[0] if leaves else 0
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


def sharded(body, m: Mesh, broadcast, mapped, valid):
  """``body(broadcast, mapped_share, valid_share) -> (summed, stacked)`` on every device of
  ``m``: ``summed`` is ``psum``-ed over the devices, ``stacked`` concatenated along the cohort
  axis."""
  spec = PartitionSpec(CLIENTS_AXIS)

  def run(b, share, ok):
    summed, stacked = body(b, share, ok)
    return jax.tree.map(lambda x: jax.lax.psum(x, CLIENTS_AXIS), summed), stacked

  return jax.shard_map(
      run,
      mesh=m,
      in_specs=(PartitionSpec(), spec, spec),
      out_specs=(PartitionSpec(), spec),
      check_vma=False,
  )(broadcast, mapped, valid)
