"""Streamed cohorts: chunks fed from the host give the round an in-memory cohort gives."""

import jax
import numpy as np
import pytest

import fedjax_like as fl
from fedjax_like.core.engine import Runtime, stream
from fedjax_like.data import Dataset


def test_plan_chunks_cuts_each_block_and_keeps_remainders_as_their_own_segment():
  blocks = ((np.arange(7), 5), (np.arange(7, 10), 2))
  chunks, segments = stream.plan_chunks(blocks, 3)
  assert segments == ((2, 3, 5), (1, 1, 5), (1, 3, 2))
  flat = np.concatenate([np.concatenate(seg) for seg in chunks])
  np.testing.assert_array_equal(flat, np.arange(10))  # every client once, in the blocks' order


def test_feeder_packs_in_order_one_chunk_ahead_and_unregisters_at_the_end():
  taken = []

  def take(rows, steps):
    taken.append(tuple(rows))
    return np.full((len(rows), steps, 2), rows[:, None, None], np.float32), np.ones(
        (len(rows), steps, 2), bool)

  spec = stream.StreamSpec(((2, 2, 3),), (jax.ShapeDtypeStruct((2,), np.float32),
                                          jax.ShapeDtypeStruct((2,), bool)), 4)
  feeder = stream.Feeder(take, [[np.array([0, 1]), np.array([2, 3])]], spec)
  batches, _ = feeder.fetch(0, 0)
  np.testing.assert_array_equal(batches[:, 0, 0], [0, 1])
  batches, _ = feeder.fetch(0, 1)
  np.testing.assert_array_equal(batches[:, 0, 0], [2, 3])
  assert taken == [(0, 1), (2, 3)]
  assert feeder.token not in stream._FEEDERS


def _clients(sizes, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for i, n in enumerate(sizes):
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = rng.integers(0, 3, n).astype(np.int32)
    out.append(Dataset((x, y), client_id=f'c{i}').batch(4))
  return out


@pytest.mark.parametrize('strategy', ['sequential', 'vmap', 'chunked'])
def test_a_streamed_round_equals_the_in_memory_round(strategy):
  import flax.linen as nn
  import jax.numpy as jnp

  spec = (jax.ShapeDtypeStruct((6,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
  model = fl.models.from_linen(nn.Dense(3), spec)
  clients = _clients([9, 3, 17, 1, 6, 12, 5])
  results = []
  for streamed in (False, True):
    runtime = Runtime(strategy, chunk_size=2, stream=streamed, stream_chunk=3)
    process = fl.learning.algorithms.build_weighted_fed_avg(
        model, fl.learning.optimizers.build_sgdm(0.1), runtime=runtime)
    state = process.initialize()
    for _ in range(2):
      state, metrics = process.next(state, clients)
    results.append((state.global_model_weights, metrics))
  (w_mem, m_mem), (w_str, m_str) = results
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), w_mem, w_str)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               m_mem['client_work'], m_str['client_work'])


def test_stateful_clients_stream_and_keep_their_states():
  import flax.linen as nn
  import jax.numpy as jnp

  spec = (jax.ShapeDtypeStruct((6,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
  model = fl.models.from_linen(nn.Dense(3), spec)
  clients = _clients([5, 8, 2, 11])
  states = []
  for streamed in (False, True):
    process = fl.learning.algorithms.build_scaffold(
        model, 0.1, num_total_clients=4, runtime=Runtime('sequential', stream=streamed,
                                                        stream_chunk=3))
    state = process.initialize()
    for _ in range(2):
      state, _ = process.next(state, clients)
    states.append(state)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               states[0].global_model_weights, states[1].global_model_weights)
  for cid in ('c0', 'c3'):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 states[0].client_work.clients.get(cid), states[1].client_work.clients.get(cid))
