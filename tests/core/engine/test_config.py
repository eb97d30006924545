"""The execution config and how ``auto`` resolves."""

import pytest

from fedjax_like.core.engine import ExecutionConfig, default_runtime, execution, resolve


def test_auto_resolution_and_the_execution_block():
  cpu = ExecutionConfig()
  assert resolve(10, cpu, has_steps=True) == ('sequential', 10)  # CPU: one client at a time
  assert resolve(10_000, ExecutionConfig(chunk_size=256)) == ('chunked', 256)
  assert resolve(10, ExecutionConfig('lanes'), has_steps=False)[0] == 'vmap'  # no steps, no lanes
  assert cpu.loop_kind == 'while' and cpu.lowering == 'native'
  assert ExecutionConfig(unroll_steps=True).loop_kind == 'unrolled'
  with execution('chunked', chunk_size=4):
    assert default_runtime().config == ExecutionConfig('chunked', 4)
    assert resolve(10, default_runtime().config) == ('chunked', 4)
  assert default_runtime().config.strategy == 'auto'


def test_bad_configuration_errors():
  with pytest.raises(ValueError, match='Unknown execution strategy'):
    ExecutionConfig('pmap')
  with pytest.raises(ValueError, match='chunk_size'):
    ExecutionConfig('chunked', 0)
  with pytest.raises(ValueError, match='max_lanes'):
    ExecutionConfig('lanes', max_lanes=0)
  with pytest.raises(ValueError, match='conv_lowering'):
    ExecutionConfig(conv_lowering='fft')
