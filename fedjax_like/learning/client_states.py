"""Per-client state kept on the host, keyed by client id (for stateful clients such as SCAFFOLD's).

A federation has thousands of clients and a round sees a few of them, so per-client state does not
live on the device. It lives here, in a :class:`ClientStates` store of NumPy pytrees keyed by client
id, and travels like this each round (done by
:class:`~fedjax_like.learning.process.LearningProcess`):

    store.gather(cohort.client_ids)       -> [clients, ...] arrays  (unseen: the initial state)
    jitted round(state, batches, mask, client_states) -> (state, metrics, new client_states)
    store.update(cohort.client_ids, new)  -> a NEW store (the old one is untouched)

The store is immutable, so a learning state that holds it is still a value: keeping an old state
keeps the client states of that time. Only the cohort's entries are replaced; the others are shared
between the old and the new store, so a round costs O(cohort), not O(federation).

The store sits in ``state.client_work`` as :class:`StatefulClientWorkState` ``(server, clients)``:
``server`` is the client work's own (device) state, ``clients`` this store. It is a registered
pytree (client ids in the treedef), so checkpointing libraries and ``jax.tree`` utilities see the
client arrays; the learning process strips it before the jitted round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

PyTree = Any


@jax.tree_util.register_pytree_node_class
class ClientStates:
  """An immutable host-side map ``client_id -> state`` with a default for unseen clients.

  Args:
    initial: the state of a client never seen (a pytree of arrays, held as NumPy).
    states: ``{client_id: state}`` of the clients seen so far.
  """

  def __init__(self, initial: PyTree, states: Mapping[str, PyTree] | None = None):
    self.initial = jax.tree.map(np.asarray, initial)
    self._states = dict(states or {})

  def __len__(self) -> int:
    return len(self._states)

  def __contains__(self, client_id: str) -> bool:
    return client_id in self._states

  def __repr__(self) -> str:
    return f'ClientStates({len(self)} clients seen)'

  @property
  def client_ids(self) -> list[str]:
    """The ids of the clients that have a stored state, sorted."""
    return sorted(self._states)

  def get(self, client_id: str) -> PyTree:
    """The state of ``client_id`` (the initial state if it was never seen)."""
    return self._states.get(client_id, self.initial)

  def gather(self, client_ids: Sequence[str]) -> PyTree:
    """The states of ``client_ids`` stacked as ``[len(client_ids), ...]`` NumPy arrays."""
    return jax.tree.map(lambda *xs: np.stack(xs), *(self.get(c) for c in client_ids))

  def update(self, client_ids: Sequence[str], stacked: PyTree) -> ClientStates:
    """A new store with ``client_ids[i]`` set to ``stacked[i]``; this one is left unchanged."""
    host = jax.tree.map(np.asarray, jax.device_get(stacked))
    new = dict(self._states)
    for i, client_id in enumerate(client_ids):  # copies: a view would keep the whole stack alive
      new[client_id] = jax.tree.map(lambda x, i=i: np.array(x[i]), host)
    return ClientStates(self.initial, new)

  def tree_flatten(self):
    ids = tuple(sorted(self._states))
    return (self.initial, tuple(self._states[c] for c in ids)), ids

  @classmethod
  def tree_unflatten(cls, ids, children):
    store = cls.__new__(cls)
    store.initial, values = children
    store._states = dict(zip(ids, values))
    return store


class StatefulClientWorkState(NamedTuple):
  """``state.client_work`` of a process with stateful clients.

  Attributes:
    server: the client work's own state (on the device, inside the jitted round).
    clients: the host-side :class:`ClientStates` (None inside the jitted round).
  """

  server: PyTree
  clients: ClientStates | None
