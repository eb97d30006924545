"""A cohort on the host as the engine's runtime takes it: :class:`CohortSource`.

The engine plans a round from each client's step count alone and packs each block of its layout
on demand (:meth:`CohortSource.take`). A source wraps either a list of clients' batched datasets
(stacked per block with :func:`~fedjax_like.data.packing.stack_clients`) or a
:class:`~fedjax_like.data.packing.PackedCohort` (blocks cut with
:func:`~fedjax_like.data.packing.take_clients`), and checks what it packs against the model
(:func:`~fedjax_like.data.packing.validate_cohort`).

A packed cohort from :func:`~fedjax_like.data.packing.pack_cohort` is a value (its arrays are
read-only), so what is derived from it is kept with it: its check against a model, its step
counts and step size, and (:meth:`CohortSource.kept`) the engine's placed blocks of the last
cohort used. A cohort passed every round is checked, measured, packed and placed once.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any

import jax.tree_util as jtu
import numpy as np

from fedjax_like.data import packing
from fedjax_like.data.dataset import BatchedDataset
from fedjax_like.data.packing import (
    PackedCohort,
    _check_cohort,
    _read_only,
    stack_clients,
    take_clients,
)

PyTree = Any

#: ``[(weak reference to a packed cohort, model, key, value)]``: what :meth:`CohortSource.kept`
#: keeps (the blocks are the cohort as checked for that model, in its dtypes).
_KEPT: list = []
_KEPT_LOCK = threading.Lock()


def _read_only_arrays(packed: PackedCohort) -> bool:
  return all(isinstance(x, np.ndarray) and not x.flags.writeable
             for x in jtu.tree_leaves((packed.batches, packed.mask)))


def _bytes_per_row(tree: PyTree, rows: tuple) -> int:
  return sum(np.asarray(x).nbytes for x in jtu.tree_leaves(tree)) // max(int(np.prod(rows)), 1)


def _steps_and_bytes(packed: PackedCohort) -> tuple[np.ndarray, int]:
  """Each client's real steps ``[clients]`` (one past its last step with an example) and the
  host bytes of one step; kept on a read-only cohort, so one used every round is measured once."""
  if '_steps_and_bytes' not in packed.__dict__:
    real = packed.mask.any(axis=2)  # [clients, steps]
    steps = np.where(real, np.arange(1, real.shape[1] + 1), 0).max(axis=1, initial=0)
    facts = (steps, _bytes_per_row((packed.batches, packed.mask), packed.mask.shape[:2]))
    if not _read_only_arrays(packed):
      return facts
    steps.flags.writeable = False
    object.__setattr__(packed, '_steps_and_bytes', facts)
  return packed.__dict__['_steps_and_bytes']


def _validated_once(packed: PackedCohort, model) -> PackedCohort | None:
  """``validate_cohort(packed, model)``, kept on ``packed`` when all its arrays are read-only (as
  :func:`pack_cohort` makes them), so a cohort used every round is checked once; None for a
  cohort with writable arrays (it is checked as each block is taken)."""
  if not _read_only_arrays(packed):
    return None
  kept = packed.__dict__.get('_validated')
  if kept is not None and kept[0] is model:
    return kept[1]
  checked = packing.validate_cohort(packed, model)
  checked = PackedCohort(_read_only(checked.batches), checked.mask, checked.client_ids)
  object.__setattr__(packed, '_validated', (model, checked))
  return checked


class CohortSource:
  """A cohort on the host, packed on demand, as the engine's runtime takes it.

  The engine plans the round from :attr:`steps` alone and packs each block of its layout with
  :meth:`take` (see :mod:`fedjax_like.core.engine.host`), so a ragged cohort is copied once, into
  blocks padded only to their own step budgets, and each block is checked against the model as it
  is packed.

  Args:
    client_data: a list of each client's :class:`BatchedDataset`, or a :class:`PackedCohort`.
    model: the model the batches must fit (``validate_cohort``), or None.
  """

  _checked_whole = False  # the whole cohort was checked once (see _validated_once)

  def __init__(self, client_data, model=None):
    self.model = model
    if isinstance(client_data, PackedCohort):
      if model is not None:
        checked = _validated_once(client_data, model)
        if checked is not None:
          self._value = client_data  # what kept() keeps its results with
          client_data, self._checked_whole = checked, True
      self._packed, self._datasets = client_data, None
      steps, self._step_bytes = _steps_and_bytes(client_data)
      self.client_ids = client_data.client_ids
    else:
      if isinstance(client_data, BatchedDataset):
        raise TypeError(
            'next() takes the cohort as a list of client datasets, e.g. next(state, [ds1, ds2]); '
            'got a single dataset. Wrap it in a list.'
        )
      datasets = list(client_data) if not isinstance(client_data, Sequence) else client_data
      self.client_ids = tuple(_check_cohort(datasets))
      self._packed, self._datasets = None, datasets
      steps = [d.num_batches for d in datasets]
    self.steps = np.asarray(steps, dtype=np.int64)

  @property
  def num_clients(self) -> int:
    return int(self.steps.size)

  @property
  def step_bytes(self) -> int:
    """Host bytes of one packed step of one client (its batch and mask)."""
    if self._packed is not None:
      return self._step_bytes
    first = self._datasets[0]
    return _bytes_per_row((first.batches, first.mask), (first.num_batches,))

  def take(self, rows, num_steps: int | None = None) -> tuple[PyTree, np.ndarray]:
    """``(batches, mask)`` of clients ``rows``, ``[len(rows), num_steps, batch, ...]``."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if self._packed is not None:
      packed = take_clients(self._packed, rows, num_steps)
    else:
      members = [self._datasets[i] for i in rows]
      longest = max(d.num_batches for d in members)
      packed = stack_clients(members, [self.client_ids[i] for i in rows],
                             longest if num_steps is None else num_steps)
    return self._checked(packed)

  def kept(self, key, make):
    """``make()`` for a read-only packed cohort, kept while that cohort is the one used (see
    :meth:`fedjax_like.core.engine.host.CohortSource.kept`); None for any other cohort.

    One cohort's result is kept at a time, process-wide, and dropped when that cohort is
    garbage-collected or another one is used: a cohort passed every round is packed and placed
    once, and pre-packed cohorts used one after another never hold more than one extra placed
    copy (on an accelerator, device memory)."""
    if not self._checked_whole:
      return None
    with _KEPT_LOCK:
      try:
        entry = _KEPT[0]
      except IndexError:  # none kept, or the kept cohort was just collected
        entry = None
      if (entry is not None and entry[0]() is self._value and entry[1] is self.model
          and entry[2] == key):
        return entry[3]
      entry = None
      _KEPT.clear()  # released before the next cohort's blocks are made
      value = make()
      _KEPT.append((weakref.ref(self._value, lambda _: _KEPT.clear()), self.model, key, value))
      return value

  def _checked(self, packed: PackedCohort) -> tuple[PyTree, np.ndarray]:
    if self.model is not None and not self._checked_whole:
      packed = packing.validate_cohort(packed, self.model)
    return packed.batches, packed.mask
