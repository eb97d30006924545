"""Checkpoints of a training run with orbax-checkpoint: the full state, written atomically.

A checkpoint after round ``r`` is the directory ``<checkpoint_dir>/<r>/`` holding

- ``state/``: the :class:`~fedjax_like.learning.LearningAlgorithmState` pytree (global model,
  distributor, client work, aggregator and finalizer states: optimizer states and the round's
  random key included), as orbax PyTree arrays. Typed PRNG keys are stored as their raw ``uint32``
  data and re-wrapped on restore;
- ``meta/metadata``: JSON with the round number, the sampler's description (its position is the
  round), the run information the loop was given (seed, config) and the metrics history.

Per-client state kept on the host (SCAFFOLD's control variates, a
:class:`~fedjax_like.learning.client_states.ClientStates` store) is saved as plain arrays: the
initial state and the seen clients' states stacked in sorted-id order, with the ids in the JSON
metadata; restoring rebuilds the store, so stateful algorithms resume exactly too.

Atomicity is orbax's: a checkpoint is written into ``<r>.orbax-checkpoint-tmp-<id>/`` and renamed to
``<r>/`` only once complete (with ``commit_success.txt`` inside), so a process killed mid-write
leaves a temporary directory that is never taken as a checkpoint and is removed when the directory
is next opened by a :class:`Checkpointer`.
Saves are synchronous: when :meth:`Checkpointer.save` returns, the checkpoint is committed. A save
that fails (a full disk, a directory that cannot be written) raises :class:`CheckpointWriteError`
naming the round and the directory, after removing what it had written; earlier checkpoints stay.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_like.learning.client_states import ClientStates

PyTree = Any


def _is_key(x) -> bool:
  return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_savable(state: PyTree) -> PyTree:
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state)


def _from_saved(restored: PyTree, template: PyTree) -> PyTree:
  def rewrap(saved, like):
    if _is_key(like):
      return jax.random.wrap_key_data(saved, impl=jax.random.key_impl(like))
    return saved

  return jax.tree.map(rewrap, restored, template)


class CheckpointWriteError(OSError):
  """A checkpoint could not be written (the partial write is removed; older ones are intact)."""


def _is_store(x) -> bool:
  return isinstance(x, ClientStates)


def _stores_as_arrays(state: PyTree) -> tuple[PyTree, list[list[str]]]:
  """Replaces each host-side per-client store with plain arrays: ``{'initial', 'seen'}``, the seen
  clients' states stacked in sorted-id order; returns the ids (for the JSON metadata) alongside."""
  ids_per_store = []

  def convert(x):
    if not _is_store(x):
      return x
    ids = x.client_ids
    ids_per_store.append(ids)
    arrays = {'initial': x.initial}
    if ids:
      arrays['seen'] = x.gather(ids)
    return arrays

  return jax.tree.map(convert, state, is_leaf=_is_store), ids_per_store


def _store_template(template: PyTree, ids_per_store: list[list[str]]) -> PyTree:
  """``template`` with each store shaped as the saved arrays of ``ids_per_store``."""
  ids = iter(ids_per_store)

  def convert(x):
    if not _is_store(x):
      return x
    seen = next(ids)
    arrays = {'initial': x.initial}
    if seen:
      arrays['seen'] = jax.tree.map(lambda a: np.zeros((len(seen),) + a.shape, a.dtype), x.initial)
    return arrays

  return jax.tree.map(convert, template, is_leaf=_is_store)


def _arrays_as_stores(restored: PyTree, template: PyTree, ids_per_store) -> PyTree:
  ids = iter(ids_per_store)

  def convert(like, saved):
    if not _is_store(like):
      return saved
    seen = next(ids)
    states = {c: jax.tree.map(lambda a, i=i: np.asarray(a[i]), saved['seen']) for i, c in enumerate(seen)}
    return ClientStates(saved['initial'], states)

  return jax.tree.map(convert, template, restored, is_leaf=_is_store)


def _abstract(tree: PyTree) -> PyTree:
  import orbax.checkpoint as ocp

  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


_TMP_SUFFIX = '.orbax-checkpoint-tmp'  # orbax's name for a checkpoint still being written


def _remove_partial_writes(directory: str) -> None:
  """Deletes what writes killed midway left (orbax's own cleanup of them runs in the background)."""
  if os.path.isdir(directory):
    for name in os.listdir(directory):
      if _TMP_SUFFIX in name:
        shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


class Checkpointer:
  """Saves and restores ``(state, meta)`` per round in ``directory`` (orbax CheckpointManager).

  Args:
    directory: where the round directories go (created if missing).
    max_to_keep: how many of the newest checkpoints to keep.
  """

  def __init__(self, directory: str | os.PathLike[str], max_to_keep: int = 3):
    try:
      import orbax.checkpoint as ocp
    except ImportError as e:  # pragma: no cover - exercised only without the extra
      raise ImportError("Checkpoints need orbax-checkpoint: pip install 'fedjax_like[sim]'.") from e
    self._ocp = ocp
    self.directory = os.path.abspath(os.fspath(directory))
    _remove_partial_writes(self.directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=True,
        cleanup_tmp_directories=True,
        enable_async_checkpointing=False,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_round(self) -> int | None:
    """The newest committed checkpoint's round, or None (temporary directories never count)."""
    self._manager.reload()
    return self._manager.latest_step()

  def all_rounds(self) -> list[int]:
    """Rounds with a committed checkpoint, oldest first."""
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def save(self, round_num: int, state: PyTree, meta: dict[str, Any]) -> None:
    """Writes and commits the checkpoint of ``round_num`` (waits for the state's device values)."""
    ocp = self._ocp
    arrays, ids_per_store = _stores_as_arrays(state)
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(_to_savable(arrays)),
        meta=ocp.args.JsonSave(dict(meta, round=int(round_num), client_state_ids=ids_per_store)),
    )
    try:
      self._manager.save(int(round_num), args=args, force=True)
      self._manager.wait_until_finished()
    except Exception as e:
      _remove_partial_writes(self.directory)
      try:
        kept = [r for r in self.all_rounds() if r != int(round_num)]
      except Exception:  # noqa: BLE001 - the directory may be unreadable too
        kept = []
      raise CheckpointWriteError(
          f'Could not write the checkpoint of round {round_num} to {self.directory}: '
          f'{type(e).__name__}: {e}. Free some space (or choose another output directory) and '
          'run again: '
          + (f'it resumes from round {kept[-1]}.' if kept else 'no earlier checkpoint exists.')
      ) from e

  def restore(
      self, template: PyTree, round_num: int | None = None
  ) -> tuple[PyTree, dict[str, Any]]:
    """``(state, meta)`` of ``round_num`` (default: the latest), shaped and typed like ``template``.

    Raises:
      FileNotFoundError: there is no committed checkpoint (of that round).
      ValueError: the saved state's structure does not match ``template`` (another model or
        algorithm); the message says what differs.
    """
    ocp = self._ocp
    round_num = self.latest_round() if round_num is None else round_num
    if round_num is None or round_num not in self.all_rounds():
      raise FileNotFoundError(f'No committed checkpoint of round {round_num} in {self.directory}.')
    try:
      meta = self._manager.restore(round_num, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
      ids_per_store = dict(meta.meta).get('client_state_ids', [])
      shaped = _store_template(template, ids_per_store)
      args = ocp.args.Composite(
          state=ocp.args.StandardRestore(_abstract(_to_savable(shaped))),
          meta=ocp.args.JsonRestore(),
      )
      restored = self._manager.restore(round_num, args=args)
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(
          f"The checkpoint of round {round_num} in {self.directory} does not match this run's "
          f'state (a different model or algorithm?): {e}'
      ) from e
    state = _arrays_as_stores(_from_saved(restored.state, shaped), template, ids_per_store)
    meta = dict(restored.meta)
    meta.pop('client_state_ids', None)
    return state, meta

  def close(self) -> None:
    self._manager.close()
