"""The offline guard of the tests on tensorflow-datasets (tests/data/test_tfds.py and
tests/simulation/test_tfds_task.py): no network, no TensorFlow, no real tfds data dir, a deadline.

Each test file keeps its own autouse fixture, with its own deadline::

    @pytest.fixture(autouse=True)
    def offline(monkeypatch, tmp_path):
      yield from _tfds_offline.guard(monkeypatch, tmp_path, _DEADLINE_S)
"""

from __future__ import annotations

import signal
import socket
import sys


class NoTensorFlow:
  """A meta-path finder that refuses to import ``tensorflow`` and records who asked for it.

  ``importlib.util.find_spec('tensorflow')`` (how etils checks whether TensorFlow is installed,
  without importing it) is answered "not installed" and not recorded.
  """

  def __init__(self):
    self.attempts = []

  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] != 'tensorflow':
      return None
    frame = sys._getframe(1)
    while frame is not None:
      code = frame.f_code
      # importlib/util.py, or '<frozen importlib.util>'.
      filename = code.co_filename
      if code.co_name == 'find_spec' and 'importlib' in filename and 'util' in filename:
        return None
      frame = frame.f_back
    self.attempts.append(name)
    raise ModuleNotFoundError(f'No module named {name!r} (refused by the test)', name=name)


def guard(monkeypatch, tmp_path, deadline_s: int):
  """A fixture's body: each attempt to reach the network or import TensorFlow raises at once and
  fails the test even if tfds swallows it; tfds's default data dir is under ``tmp_path``; a test
  running past ``deadline_s`` seconds raises TimeoutError."""
  attempts = []

  def refuse(*args, **kwargs):
    attempts.append(args[:2])
    raise OSError(f'network access attempted in an offline test: {args[:2]}')

  monkeypatch.setattr(socket.socket, 'connect', refuse)
  monkeypatch.setattr(socket.socket, 'connect_ex', refuse)
  monkeypatch.setattr(socket, 'create_connection', refuse)
  monkeypatch.setattr(socket, 'getaddrinfo', refuse)
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'tfds_default'))
  monkeypatch.setenv('NO_GCE_CHECK', 'true')

  def timeout(signum, frame):
    raise TimeoutError(f'test exceeded {deadline_s} s (waiting on the network?)')

  old = signal.signal(signal.SIGALRM, timeout)
  signal.alarm(deadline_s)
  no_tf = NoTensorFlow()
  sys.meta_path.insert(0, no_tf)
  try:
    yield
  finally:
    sys.meta_path.remove(no_tf)
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
  assert not attempts, f'the test tried to reach the network: {attempts}'
  assert not no_tf.attempts, f'the test tried to import TensorFlow: {no_tf.attempts}'
