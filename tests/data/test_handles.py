"""Tests for the per-process shared reader registry."""

from __future__ import annotations

import os
import pickle

import pytest

from fedjax_like.data.sources import handles


class Recorder:
  """A stand-in reader: counts openings and closings."""

  opened: list[str] = []

  def __init__(self, path: str):
    self.path = path
    self.closed = False
    Recorder.opened.append(path)

  def close(self) -> None:
    self.closed = True

  def __reduce__(self):
    return handles.open_shared, (type(self), self.path)


@pytest.fixture(autouse=True)
def _reset():
  Recorder.opened = []
  yield
  handles.close_all()


def test_one_reader_per_file_reopened_when_the_file_changes(tmp_path):
  path = tmp_path / 'f'
  path.write_bytes(b'one')
  first = handles.open_shared(Recorder, str(path))
  assert handles.open_shared(Recorder, str(tmp_path / '.' / 'f')) is first
  replacement = tmp_path / 'g'
  replacement.write_bytes(b'two!')
  os.replace(replacement, path)  # Another file now at the same path.
  second = handles.open_shared(Recorder, str(path))
  assert second is not first and len(Recorder.opened) == 2
  with pytest.raises(FileNotFoundError):
    handles.open_shared(Recorder, str(tmp_path / 'missing'))


def test_pickling_reopens_through_the_registry_and_close_all_closes(tmp_path):
  path = tmp_path / 'f'
  path.write_bytes(b'x')
  reader = handles.open_shared(Recorder, str(path))
  assert pickle.loads(pickle.dumps(reader)) is reader
  handles.close_all()
  assert reader.closed
  assert handles.open_shared(Recorder, str(path)) is not reader
