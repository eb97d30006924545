"""TFF's legacy HDF5 client data (``HDF5ClientData``, before its SQLite files), read with h5py.

The layout of TFF's pre-2021 releases (EMNIST's ``fed_emnist*_{train,test}.h5``, and FedJAX 0.0.x
through them): one file per split, a top-level group ``examples`` holding a group per client,
``examples/<client_id>/<feature>``, each feature a dataset ``[num_examples, ...]``. TFF served the
client ids sorted with Python's ``sorted()``, and a client's examples in stored order.

Reading is lazy: opening a file lists client ids and reads dataset shapes (for sizes), not data; a
client's arrays are read when its dataset is asked for. ``h5py`` is optional and imported only
here, when such a file is read.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from fedjax_like.data.client_data import ClientData
from fedjax_like.data.sources import CorruptDatasetError, handles

_Postprocess = Callable[[str, str, dict[str, np.ndarray]], dict[str, np.ndarray]]


def import_h5py() -> Any:
  """``h5py``, or an ImportError saying how to install it."""
  try:
    import h5py  # Optional dependency, imported only when HDF5 files are read.
  except ImportError as e:
    raise ImportError(
        "Reading HDF5 files needs h5py, which is not installed: pip install h5py (it comes with "
        "pip install 'fedjax_like[emnist]')."
    ) from e
  return h5py


class Hdf5Reader:
  """One read-only h5py handle of a file in TFF's HDF5ClientData layout, shared by threads.

  Make it with ``handles.open_shared(Hdf5Reader, path)`` to share it across ClientData.

  Raises (on construction):
    ImportError: h5py is not installed.
    CorruptDatasetError: the file is not readable HDF5 or has no ``examples`` group.
  """

  def __init__(self, path: str):
    h5py = import_h5py()
    self.path = path
    self._lock = threading.Lock()
    try:
      self._file = h5py.File(path, 'r')
    except OSError as e:
      raise CorruptDatasetError(
          f'{path} is not a readable HDF5 file ({e}); delete it and load again.'
      ) from e
    if 'examples' not in self._file:
      self._file.close()
      raise CorruptDatasetError(f'{path} has no top-level group "examples" (TFF HDF5ClientData).')
    self._examples = self._file['examples']

  def close(self) -> None:
    with self._lock:
      self._file.close()

  def __reduce__(self) -> tuple:
    return handles.open_shared, (type(self), self.path)

  def clients(self, size_feature: str) -> tuple[list[str], dict[str, int]]:
    """Client ids sorted as TFF sorts them, and their sizes from ``size_feature``'s shape.

    Raises:
      CorruptDatasetError: no clients, or a client group lacks ``size_feature``.
    """
    with self._lock:
      client_ids = sorted(str(c) for c in self._examples.keys())
      try:
        sizes = {c: int(self._examples[c][size_feature].shape[0]) for c in client_ids}
      except (KeyError, IndexError, TypeError) as e:
        message = f'{self.path}: a client group lacks a "{size_feature}" dataset ({e}).'
        raise CorruptDatasetError(message) from e
    if not client_ids:
      raise CorruptDatasetError(f'{self.path} has no clients.')
    return client_ids, sizes

  def read(self, client_id: str, features: tuple[str, ...]) -> dict[str, np.ndarray]:
    """``{feature: array}`` of one client, as stored.

    Raises:
      CorruptDatasetError: the client lacks one of ``features``.
    """
    with self._lock:
      group = self._examples[client_id]
      try:
        return {name: np.asarray(group[name][()]) for name in features}
      except KeyError as e:
        raise CorruptDatasetError(f'{self.path}: client {client_id!r} lacks {e}.') from e

  def load(
      self, features: tuple[str, ...], postprocess: _Postprocess | None, client_id: str
  ) -> dict[str, np.ndarray]:
    arrays = self.read(client_id, features)
    return postprocess(self.path, client_id, arrays) if postprocess is not None else arrays

  def client_data(
      self, features: tuple[str, ...], postprocess: _Postprocess | None = None
  ) -> ClientData:
    """A lazy ClientData serving ``features`` of each client, in that key order.

    Sizes come from the first feature's leading dimension. ``postprocess(path, client_id,
    arrays)`` (picklable) checks and converts what was read; it raises CorruptDatasetError for
    arrays of the wrong shape.
    """
    client_ids, sizes = self.clients(features[0])
    load = functools.partial(self.load, tuple(features), postprocess)
    return ClientData.from_loader(client_ids, load, sizes=sizes)
