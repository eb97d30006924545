"""Fixtures of the engine's tests."""

import pytest

from fedjax_like.core.engine import native


@pytest.fixture(scope='module')
def native_kernels():
  """The native CPU kernels, built; skips the module on a machine without a C compiler (the
  engine then uses im2col and XLA's dots, tested elsewhere)."""
  if native._compiler() is None:
    pytest.skip('no C compiler on this machine: the engine falls back (tested elsewhere)')
  assert native.available(), native.unavailable_reason()
