"""The runners: every strategy's map and sum equal a NumPy loop over clients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_like.core.engine import CohortData, ClientLoop, Engine, ExecutionConfig, Program

CASES = [('vmap', None), ('sequential', None), ('chunked', 2), ('chunked', 3), ('chunked', 7),
         ('lanes', None)]


def client_fn(shared, x, w):
  # A per-client computation with a broadcast argument: (w * (x @ shared), w).
  return {'out': w * (x @ shared), 'w': w}


@pytest.mark.parametrize('strategy,chunk', CASES)
def test_map_and_sum_match_numpy_loop(strategy, chunk):
  rng = np.random.default_rng(0)
  shared = rng.normal(size=(4, 3)).astype(np.float32)
  xs = rng.normal(size=(7, 4)).astype(np.float32)
  ws = rng.uniform(size=7).astype(np.float32)
  expected = [client_fn(shared, x, w) for x, w in zip(xs, ws)]
  engine = Engine(ExecutionConfig(strategy, chunk))
  program = lambda s, x, w: Program.of_function(client_fn, (s, x, w), (None, 0, 0))  # noqa: E731
  stacked = jax.jit(lambda s, x, w: engine.map(program(s, x, w)))(shared, xs, ws)
  np.testing.assert_allclose(stacked['out'], np.stack([e['out'] for e in expected]), rtol=1e-5)
  summed = jax.jit(lambda s, x, w: engine.sum(program(s, x, w)))(shared, xs, ws)
  np.testing.assert_allclose(summed['out'], sum(e['out'] for e in expected), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(summed['w'], ws.sum(), rtol=1e-6)


def test_chunk_padding_never_leaks_nan():
  # A function that is NaN on an all-zero client: padding clients are zeros, yet the sum is clean.
  def fn(x):
    return jnp.sum(x) / jnp.sum(x)  # 1 for real clients, NaN for zeros

  xs = np.ones((5, 3), np.float32)
  engine = Engine(ExecutionConfig('chunked', 4))  # 5 clients -> 3 padding clients
  total = jax.jit(lambda x: engine.sum(Program.of_function(fn, (x,), (0,))))(xs)
  assert float(total) == 5.0


def test_arguments_of_different_cohort_sizes_are_refused():
  with pytest.raises(ValueError, match='leading cohort axis'):
    Engine().sum(Program.of_function(lambda a, b: a + b, (jnp.ones(3), jnp.ones(4)), (0, 0)))


def counting_loop():
  """A loop whose output is (sum of the client's real values, real steps taken)."""
  return ClientLoop(
      lambda shared, client_input: (jnp.zeros(()), jnp.int32(0)),
      lambda carry, batch, mask: (carry[0] + jnp.sum(batch * mask), carry[1] + 1),
      lambda shared, carry: carry,
  )


def grouped_program(steps, groups):
  rng = np.random.default_rng(1)
  n, longest = len(steps), max(steps)
  batches = rng.normal(size=(n, longest, 2)).astype(np.float32)
  mask = np.zeros((n, longest, 2), bool)
  for i, s in enumerate(steps):
    mask[i, :s] = True
  data = CohortData(jnp.asarray(batches), jnp.asarray(mask), step_groups=groups)
  expected = [(float((batches[i] * mask[i]).sum()), s) for i, s in enumerate(steps)]
  return Program.of_loop(counting_loop(), (), None, jnp.zeros((n,)), 0, data), expected


@pytest.mark.parametrize('strategy', ['vmap', 'sequential', 'chunked'])
def test_step_groups_run_each_group_over_its_budget(strategy):
  program, expected = grouped_program([5, 4, 2, 1], ((2, 5), (2, 2)))
  values, ran = Engine(ExecutionConfig(strategy, 2)).map(program)
  np.testing.assert_allclose(values, [v for v, _ in expected], rtol=1e-5)
  np.testing.assert_array_equal(ran, [s for _, s in expected])


def test_step_groups_too_short_change_the_result_and_uncovering_groups_are_refused():
  # A budget cut below a client's length drops its steps: the equality above is a real check.
  program, expected = grouped_program([5, 4, 2, 1], ((2, 3), (2, 2)))
  _, ran = Engine(ExecutionConfig('vmap')).map(program)
  assert list(np.asarray(ran)) == [3, 3, 2, 1]
  program, _ = grouped_program([5, 4, 2, 1], ((2, 5),))
  with pytest.raises(ValueError, match='step groups cover 2 clients'):
    Engine(ExecutionConfig('vmap')).map(program)
