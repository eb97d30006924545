"""The memory check: a round that does not fit names a chunk size that does, or the part that
stacks every client's value."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fedjax_like as fl
from fedjax_like.core.engine import CohortTooLargeError, memory
from fedjax_like.data import Dataset


def clients_and_model():
  spec = (jax.ShapeDtypeStruct((64,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
  model = fl.models.from_linen(nn.Dense(10), spec)
  rng = np.random.default_rng(0)
  clients = [
      Dataset((rng.normal(size=(8, 64)).astype(np.float32), np.zeros(8, np.int32))).batch(4)
      for _ in range(64)
  ]
  return model, clients


def test_round_too_large_for_memory_names_a_chunk_size(monkeypatch):
  model, clients = clients_and_model()
  # Pretend the device has just enough memory for the data but not for 64 clients side by side.
  monkeypatch.setattr(memory, '_device_memory_limit', lambda device: 400_000)
  process = fl.learning.algorithms.build_weighted_fed_avg(
      model, fl.learning.optimizers.build_sgdm(0.1),
      runtime=fl.Runtime('chunked', chunk_size=64),
  )
  with pytest.raises(CohortTooLargeError, match=r'chunk_size=\d+'):
    process.next(process.initialize(), clients)


def test_a_stacking_aggregator_is_named_when_the_round_does_not_fit(monkeypatch):
  model, clients = clients_and_model()
  monkeypatch.setattr(memory, '_device_memory_limit', lambda device: 1_000)
  compiled = []
  with pytest.raises(CohortTooLargeError, match="the aggregator 'median'"):
    memory.compile_within_memory(
        lambda config: compiled.append(config) or jax.jit(lambda x: x * 2).lower(
            jnp.ones((64, 1000))).compile(),
        64, fl.core.engine.ExecutionConfig('sequential'), ("the aggregator 'median'",),
    )
  assert len(compiled) > 1  # smaller chunks were tried first
