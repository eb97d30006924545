"""The lanes runner: clients back to back in vectorized lanes equal one client at a time."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_like.core.engine import CohortData, ClientLoop, Engine, ExecutionConfig, Program, plan

# Order-sensitive steps, a per-client start value and a shared value added at the end: a client
# whose init or finish ran at the wrong lane step, or whose steps ran out of order, differs.
LOOP = ClientLoop(
    lambda shared, start: (start, jnp.int32(0)),
    lambda carry, batch, mask: (carry[0] * 0.9 + jnp.sum(batch * mask), carry[1] + 1),
    lambda shared, carry: {'value': carry[0] * shared, 'steps': carry[1]},
)


def cohort(steps, seed=0):
  rng = np.random.default_rng(seed)
  n, longest = len(steps), max(max(steps), 1)
  batches = rng.normal(size=(n, longest, 3)).astype(np.float32)
  mask = np.zeros((n, longest, 3), bool)
  for i, s in enumerate(steps):
    mask[i, :s] = True
    if s:
      mask[i, s - 1, 2] = False  # a partly padded last batch
  starts = rng.normal(size=n).astype(np.float32)
  want = []
  for i, s in enumerate(steps):
    c = starts[i]
    for t in range(s):
      c = c * 0.9 + (batches[i, t] * mask[i, t]).sum()
    want.append((c * 2.0, s))
  return batches, mask, starts, want


@pytest.mark.parametrize('steps', [[5, 1, 3, 3, 2, 7, 1], [4, 0, 2, 9, 1, 1, 1, 1, 6, 3, 2]])
@pytest.mark.parametrize('max_lanes', [1, 2, 3, None])
def test_lanes_equal_a_numpy_loop_for_map_and_sum(steps, max_lanes):
  batches, mask, starts, want = cohort(steps)
  p = plan.plan_lanes(np.asarray(steps), max_lanes=max_lanes)
  order = p.order
  lanes = tuple(jnp.asarray(a) for a in (p.lane, p.start, p.rank))
  data = CohortData(jnp.asarray(batches[order]), jnp.asarray(mask[order]), lanes,
                    lane_shape=p.shape)
  program = Program.of_loop(LOOP, jnp.float32(2.0), None, jnp.asarray(starts[order]), 0, data)
  engine = Engine(ExecutionConfig('lanes'))
  out = jax.jit(lambda: engine.map(program))()
  np.testing.assert_allclose(out['value'], [want[i][0] for i in order], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(out['steps'], [want[i][1] for i in order])
  total = jax.jit(lambda: engine.sum(program))()
  np.testing.assert_allclose(total['value'], sum(v for v, _ in want), rtol=1e-5, atol=1e-4)
  # The same data under the other runners gives the same outputs.
  seq = Engine(ExecutionConfig('sequential')).map(program)
  np.testing.assert_allclose(seq['value'], out['value'], rtol=1e-5, atol=1e-5)


def test_lane_arrays_are_arguments_so_a_new_cohort_of_the_same_shape_reuses_the_program():
  steps_a, steps_b = [4, 3, 2, 1], [4, 1, 3, 2]
  engine = Engine(ExecutionConfig('lanes'))
  traces = []

  @jax.jit
  def run(batches, mask, starts, lane, start, rank):
    traces.append(1)
    data = CohortData(batches, mask, (lane, start, rank), lane_shape=shape)
    return engine.map(Program.of_loop(LOOP, jnp.float32(2.0), None, starts, 0, data))

  pa, pb = plan.plan_lanes(np.asarray(steps_a), max_lanes=2), plan.plan_lanes(np.asarray(steps_b),
                                                                              max_lanes=2)
  assert pa.shape == pb.shape
  shape = pa.shape
  for steps, p in ((steps_a, pa), (steps_b, pb)):
    batches, mask, starts, want = cohort(steps)
    o = p.order
    out = run(batches[o], mask[o], starts[o], p.lane, p.start, p.rank)
    np.testing.assert_allclose(out['value'], [want[i][0] for i in o], rtol=1e-5, atol=1e-5)
  assert len(traces) == 1
