"""The overhead benchmark's floor cell computes the round that ``process.next`` computes."""

import pathlib
import sys

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from benchmarks import overhead  # noqa: E402


def test_floor_round_gives_the_weights_of_a_fedavg_round():
  module, clients, packed, process = overhead._setup(batches_per_client=2)
  state = process.initialize()
  server = {'params': state.global_model_weights.trainable}
  floor = overhead._floor_round(module, [(x[:32], y[:32]) for x, y in clients])(server)
  state, _ = process.next(state, packed)
  ours = {'params': state.global_model_weights.trainable}
  moved = max(float(np.abs(a - b).max())
              for a, b in zip(jax.tree.leaves(server), jax.tree.leaves(ours), strict=True))
  assert moved > 1e-3  # the round changes the weights, so agreeing below says something
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), floor, ours)
