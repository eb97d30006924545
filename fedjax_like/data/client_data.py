"""Federated data: a population of clients, each with its own :class:`Dataset`.

``ClientData`` mirrors TFF's ``tff.simulation.datasets.ClientData``: ``client_ids``,
``dataset_for_client(client_id)`` (alias ``create_tf_dataset_for_client`` for ported code),
``create_tf_dataset_from_all_clients(seed)`` and ``preprocess(fn)``. It is built either in memory
from ``{client_id: {feature: array}}`` or lazily from a loader function (one client read from a file
only when asked for), which is how the file-backed sources in :mod:`fedjax_like.data.sources` are
made. Host side only: arrays are NumPy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax.tree_util as jtu
import numpy as np

from fedjax_like.data.dataset import Dataset

PyTree = Any
_Loader = Callable[[str], PyTree]
_ManyLoader = Callable[[Sequence[str]], Sequence[PyTree]]


class ClientData:
  """A population of clients whose datasets are produced on demand.

  Args:
    client_ids: the clients, in a fixed order (``client_ids[n]`` is stable).
    load: client_id -> pytree of NumPy arrays ``[num_examples, ...]`` for that client.
    transforms: Dataset -> Dataset functions applied, in order, to every client's dataset.
    sizes: optional ``{client_id: num_examples}`` known without loading (for sampling and
      bucketing by size); computed by loading when absent.
    load_many: optional ``client_ids -> [pytree per client]``, reading several clients at once
      (one query for a cohort); ``load`` per client is used when absent.
  """

  def __init__(
      self,
      client_ids: Sequence[str],
      load: _Loader,
      transforms: Sequence[Callable[[Dataset], Dataset]] = (),
      sizes: Mapping[str, int] | None = None,
      load_many: _ManyLoader | None = None,
  ):
    self._client_ids = [str(c) for c in client_ids]
    if len(set(self._client_ids)) != len(self._client_ids):
      raise ValueError('client_ids must be unique.')
    self._index = set(self._client_ids)
    self._load = load
    self._transforms = tuple(transforms)
    self._sizes = dict(sizes) if sizes is not None else None
    self._load_many = load_many

  # Construction ---------------------------------------------------------------------------------

  @classmethod
  def from_clients_dict(cls, clients: Mapping[str, PyTree]) -> ClientData:
    """In memory, from ``{client_id: {feature: array[num_examples, ...]}}`` (or tuples of arrays)."""
    if not clients:
      raise ValueError('from_clients_dict needs at least one client.')
    data = {str(k): jtu.tree_map(np.asarray, v) for k, v in clients.items()}
    sizes = {k: len(Dataset(v)) for k, v in data.items()}
    return cls(list(data), data.__getitem__, sizes=sizes)

  @classmethod
  def from_loader(
      cls,
      client_ids: Sequence[str],
      load: _Loader,
      sizes: Mapping[str, int] | None = None,
      load_many: _ManyLoader | None = None,
  ) -> ClientData:
    """Lazily, from a function that reads one client's arrays (e.g. from an HDF5 file), and
    optionally one that reads several at once."""
    return cls(client_ids, load, sizes=sizes, load_many=load_many)

  # TFF-style API --------------------------------------------------------------------------------

  @property
  def client_ids(self) -> list[str]:
    return list(self._client_ids)

  def __len__(self) -> int:
    return len(self._client_ids)

  def __repr__(self) -> str:
    return f'ClientData(num_clients={len(self)})'

  def _check_id(self, client_id: str) -> str:
    client_id = str(client_id)
    if client_id not in self._index:
      raise KeyError(
          f'Unknown client_id {client_id!r}; pick one of ClientData.client_ids '
          f'(there are {len(self)}, e.g. {self._client_ids[:3]}).'
      )
    return client_id

  def _finish(self, client_id: str, elements: PyTree) -> Dataset:
    dataset = Dataset(elements, client_id=client_id)
    for transform in self._transforms:
      dataset = transform(dataset)
    return dataset

  def dataset_for_client(self, client_id: str) -> Dataset:
    """The (preprocessed) dataset of one client."""
    client_id = self._check_id(client_id)
    return self._finish(client_id, self._load(client_id))

  def datasets_for_clients(self, client_ids: Sequence[str]) -> list[Dataset]:
    """The (preprocessed) datasets of several clients (a cohort), read together when the source
    can (one query for a file-backed source); the same datasets as ``dataset_for_client``."""
    ids = [self._check_id(c) for c in client_ids]
    if self._load_many is None:
      return [self.dataset_for_client(c) for c in ids]
    return [self._finish(c, e) for c, e in zip(ids, self._load_many(ids), strict=True)]

  # The name TFF programs use, so ported code runs unchanged.
  create_tf_dataset_for_client = dataset_for_client

  def preprocess(self, fn: Callable[[Dataset], Dataset]) -> ClientData:
    """A new ClientData whose datasets are ``fn(dataset)``, applied lazily per client."""
    return ClientData(
        self._client_ids, self._load, self._transforms + (fn,), self._sizes, self._load_many
    )

  def client_sizes(self) -> dict[str, int]:
    """``{client_id: num_examples}`` of the raw (unpreprocessed) data."""
    if self._sizes is None:
      self._sizes = {c: len(Dataset(self._load(c))) for c in self._client_ids}
    return dict(self._sizes)

  @property
  def element_spec(self) -> PyTree:
    """The structure of one (preprocessed) example, read from the first client."""
    return self.dataset_for_client(self._client_ids[0]).element_spec

  def subset(self, client_ids: Sequence[str]) -> ClientData:
    """The same data restricted to ``client_ids`` (order kept as given)."""
    missing = [c for c in map(str, client_ids) if c not in self._index]
    if missing:
      raise KeyError(f'subset(): unknown client ids {missing[:5]}.')
    sizes = None if self._sizes is None else {c: self._sizes[str(c)] for c in client_ids}
    return ClientData(client_ids, self._load, self._transforms, sizes, self._load_many)

  def create_dataset_from_all_clients(self) -> Dataset:
    """All clients' examples concatenated, in ``client_ids`` order (for centralized baselines)."""
    return self._concatenated(self._client_ids)

  def create_tf_dataset_from_all_clients(self, seed: int | Sequence[int] | None = None) -> Dataset:
    """All clients' (preprocessed) examples in one dataset, as TFF's method of this name.

    As in TFF, the clients come in an order shuffled by ``np.random.RandomState(seed)`` (random
    when ``seed`` is None), each client's examples in their own order: shuffle the result for
    centralized training.
    """
    client_ids = list(self._client_ids)
    np.random.RandomState(seed=seed).shuffle(client_ids)
    return self._concatenated(client_ids)

  def _concatenated(self, client_ids: Sequence[str]) -> Dataset:
    parts = [self.dataset_for_client(c).elements for c in client_ids]
    return Dataset(jtu.tree_map(lambda *xs: np.concatenate(xs), *parts))
