"""Pytree arithmetic against NumPy."""

import jax.numpy as jnp
import numpy as np

from fedjax_like.core import tree


def test_arithmetic_and_norms_match_numpy():
  rng = np.random.default_rng(0)
  a = {'w': rng.normal(size=(3, 4)), 'b': rng.normal(size=4)}
  b = {'w': rng.normal(size=(3, 4)), 'b': rng.normal(size=4)}
  ja = {k: jnp.asarray(v, jnp.float32) for k, v in a.items()}
  jb = {k: jnp.asarray(v, jnp.float32) for k, v in b.items()}
  np.testing.assert_allclose(tree.add(ja, jb)['w'], a['w'] + b['w'], rtol=1e-6)
  np.testing.assert_allclose(tree.sub(ja, jb)['b'], a['b'] - b['b'], rtol=1e-6)
  np.testing.assert_allclose(tree.scale(ja, 2.5)['w'], 2.5 * a['w'], rtol=1e-6)
  flat_a = np.concatenate([a['b'], a['w'].ravel()])
  flat_b = np.concatenate([b['b'], b['w'].ravel()])
  np.testing.assert_allclose(tree.dot(ja, jb), flat_a @ flat_b, rtol=1e-5)
  np.testing.assert_allclose(tree.global_norm(ja), np.linalg.norm(flat_a), rtol=1e-6)


def test_weighted_mean_over_cohort_axis():
  rng = np.random.default_rng(1)
  stacked = rng.normal(size=(5, 3))
  weights = np.array([1.0, 0.0, 3.0, 2.0, 0.5])
  got = tree.weighted_mean(jnp.asarray(stacked, jnp.float32), jnp.asarray(weights, jnp.float32))
  np.testing.assert_allclose(got, (weights[:, None] * stacked).sum(0) / weights.sum(), rtol=1e-5)
  zero = tree.weighted_mean(jnp.ones((2, 3)), jnp.zeros(2))
  np.testing.assert_array_equal(zero, np.zeros(3))


def test_all_finite_and_where():
  assert bool(tree.all_finite({'a': jnp.ones(3), 'b': jnp.zeros(2)}))
  assert not bool(tree.all_finite({'a': jnp.array([1.0, jnp.nan])}))
  picked = tree.where(jnp.array(False), {'a': jnp.ones(2)}, {'a': jnp.zeros(2)})
  np.testing.assert_array_equal(picked['a'], np.zeros(2))


def test_sum_leading_matches_a_numpy_loop_for_every_cohort_size():
  """Pairwise halving covers odd sizes (the unpaired row is carried) and every rank."""
  import jax

  rng = np.random.default_rng(2)
  for shape in [(1, 3), (2, 3), (3, 4, 2), (7, 5), (10, 6, 3), (33, 2), (6,), (0, 3)]:
    x = rng.normal(size=shape).astype(np.float32)
    want = np.zeros(shape[1:], np.float64)
    for row in x.astype(np.float64):  # the reference: a plain loop over the cohort
      want = want + row
    got = jax.jit(tree.sum_leading)(jnp.asarray(x))
    assert got.shape == shape[1:] and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  ints = jnp.arange(15, dtype=jnp.int32).reshape(5, 3)
  np.testing.assert_array_equal(tree.sum_leading(ints), np.arange(15).reshape(5, 3).sum(0))
  # Bools and small ints keep jnp.sum's promotion (a count, not a logical or / an int8 overflow).
  flags = jnp.ones((5, 3), bool)
  assert tree.sum_leading(flags).dtype == jnp.sum(flags, axis=0).dtype
  np.testing.assert_array_equal(tree.sum_leading(flags), np.full(3, 5))
  small = jnp.full((200, 2), 100, jnp.int8)
  np.testing.assert_array_equal(tree.sum_leading(small), np.full(2, 20000))
  # NaN in one client's row reaches the sum (nothing is dropped by the pairing).
  x = np.ones((5, 2), np.float32)
  x[4, 1] = np.nan
  got = np.asarray(tree.sum_leading(jnp.asarray(x)))
  assert got[0] == 5.0 and np.isnan(got[1])


def test_sum_leading_on_cpu_is_elementwise_adds_not_a_reduction():
  """On CPU a cohort sum of rank >= 2 compiles to adds (XLA:CPU's library reduction over a leading
  axis is the slow path it avoids); vectors stay one reduction."""
  import jax

  if jax.default_backend() != 'cpu':
    return
  matrix = jax.jit(tree.sum_leading).lower(jnp.ones((10, 784, 62))).as_text()
  assert 'reduce' not in matrix and 'add' in matrix
  vector = jax.jit(tree.sum_leading).lower(jnp.ones((10,))).as_text()
  assert 'reduce' in vector
