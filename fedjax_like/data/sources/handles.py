"""One open reader per file per process, shared by every ClientData that reads the file.

A file-backed ClientData holds a reader (an SQLite connection, an HDF5 handle) whose ``load`` it
calls per client. :func:`open_shared` returns the process's reader of a path, making it on first
use: two ``load_data`` calls, or the train and test splits of one file, share one handle. A reader
is keyed on the file's identity (real path, size, mtime, inode) and on the process id, so a file
replaced in place, or a forked worker, gets a fresh handle instead of a stale or shared one.

Readers pickle as ``open_shared(type(reader), path)`` (their ``__reduce__``), so a ClientData sent
to another process reopens the file there rather than carrying a handle across.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Protocol, TypeVar


class Reader(Protocol):
  """What :func:`open_shared` manages: built from a path, closable."""

  path: str

  def __init__(self, path: str): ...

  def close(self) -> None: ...


_R = TypeVar('_R', bound=Reader)

_READERS: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def open_shared(cls: type[_R], path: str) -> _R:
  """This process's shared ``cls(path)``; reopened if the file was replaced or after a fork.

  Raises:
    FileNotFoundError: ``path`` does not exist.
    Whatever ``cls(path)`` raises for a file it cannot read.
  """
  real = os.path.realpath(path)
  st = os.stat(real)
  key = (cls.__module__, cls.__qualname__, real, st.st_size, st.st_mtime_ns, st.st_ino, os.getpid())
  with _LOCK:
    reader = _READERS.get(key)
    if reader is None:
      # Forget handles of an older file at this path or of a parent process; ClientData made
      # from them keep theirs (closed when no longer referenced).
      for old in [k for k in _READERS if k[:3] == key[:3]]:
        del _READERS[old]
      reader = _READERS[key] = cls(path)
  return reader


def close_all() -> None:
  """Closes every shared handle of this process (for tests); ClientData made before can no longer
  load."""
  with _LOCK:
    for key, reader in list(_READERS.items()):
      if key[-1] == os.getpid():
        reader.close()
    _READERS.clear()
