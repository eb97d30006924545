"""Client loops and programs: the engine runs exactly a client's real steps, in order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_like.core.engine import ClientLoop, Engine, ExecutionConfig, Program, combine
from fedjax_like.core.engine import program as programs

MASKS = np.array([
    [True, False, True, True, False, False],  # gaps
    [True, True, True, True, True, True],  # all
    [False, False, False, False, False, False],  # none
    [True, True, False, False, False, False],  # a prefix, as packing makes
    [False, False, False, False, False, True],  # only the last
])
XS = np.arange(1.0, 31.0, dtype=np.float32).reshape(5, 6)


def expected():
  out = []
  for x, mask in zip(XS, MASKS, strict=True):
    value, ran = 0.0, 0
    for v, on in zip(x, mask, strict=True):
      if on:
        value, ran = value * 0.5 + v, ran + 1
    out.append((value, ran))
  return out


# A loop that is order-sensitive (0.5 c + v) and counts the steps that ran; its client input is
# added at init and its shared value at finish, so both argument kinds reach the right place.
LOOP = ClientLoop(
    lambda shared, offset: (offset, jnp.int32(0)),
    lambda carry, batch, mask: (carry[0] * 0.5 + batch[0, 0], carry[1] + 1),
    lambda shared, carry: (carry[0] + shared, carry[1]),
)


@pytest.mark.parametrize('kind', ['while', 'scan', 'unrolled'])
def test_loop_steps_runs_only_real_steps_in_order(kind):
  batches = jnp.asarray(XS)[..., None, None]  # [clients, steps, batch 1, 1]
  mask = jnp.asarray(MASKS)[..., None]
  for i, (value, ran) in enumerate(expected()):
    carry = programs.loop_steps(LOOP.step, (jnp.zeros(()), jnp.int32(0)), batches[i], mask[i], kind)
    np.testing.assert_allclose(carry[0], value, rtol=1e-6)
    assert int(carry[1]) == ran
    # The same client read in place from the whole cohort's arrays (a ClientSlice's form).
    carry = programs.loop_steps(LOOP.step, (jnp.zeros(()), jnp.int32(0)), batches, mask, kind,
                                client=jnp.int32(i))
    np.testing.assert_allclose(carry[0], value, rtol=1e-6)
    assert int(carry[1]) == ran
  text = str(jax.make_jaxpr(lambda b, m: programs.loop_steps(
      LOOP.step, (jnp.zeros(()), jnp.int32(0)), b, m, kind))(batches[0], mask[0]))
  if kind == 'while':  # a loop over the real steps: its trip count is theirs
    assert 'while' in text and 'scan' not in text, text
  else:
    assert 'scan' in text and 'cond' in text, text


@pytest.mark.parametrize('strategy', ['vmap', 'sequential', 'chunked'])
def test_the_engine_runs_a_loop_program_with_its_arguments(strategy):
  batches = jnp.asarray(XS)[..., None, None]
  mask = jnp.asarray(MASKS)[..., None]
  offsets = jnp.arange(5, dtype=jnp.float32) * 100
  program = Program.of_loop(LOOP, jnp.float32(7.0), None, offsets, 0, (batches, mask))
  engine = Engine(ExecutionConfig(strategy, chunk_size=2))
  values, ran = jax.jit(lambda: engine.map(program))()
  # With an offset o the fold gives o * 0.5**ran + value; the shared 7 is added at finish.
  want = [o * 0.5 ** r + v + 7.0 for o, (v, r) in zip(np.asarray(offsets), expected())]
  np.testing.assert_allclose(values, want, rtol=1e-6)
  np.testing.assert_array_equal(ran, [r for _, r in expected()])
  total = engine.sum(program)
  np.testing.assert_allclose(total[0], sum(want), rtol=1e-6)
  assert programs.output_type(program)[1].dtype == jnp.int32


def test_programs_over_the_same_data_step_together_and_others_are_materialized():
  batches = jnp.asarray(XS)[..., None, None]
  mask = jnp.asarray(MASKS)[..., None]
  zeros = jnp.zeros((5,), jnp.float32)
  a = Program.of_loop(LOOP, jnp.float32(0.0), None, zeros, 0, (batches, mask))
  b = Program.of_loop(LOOP, jnp.float32(1.0), None, zeros, 0, (batches, mask))
  other = Program.of_loop(LOOP, jnp.float32(2.0), None, zeros, 0, (batches + 1.0, mask))
  materialized = []

  def materialize(p):
    materialized.append(p)
    return Engine().map(p)

  joined = combine((a, b, other), materialize)
  assert joined.data is a.data and materialized == [other]
  (va, _), (vb, _), (vo, _) = Engine().map(joined)
  np.testing.assert_allclose(vb - va, np.ones(5), rtol=1e-6)
  np.testing.assert_allclose(vo, Engine().map(other)[0], rtol=1e-6)
