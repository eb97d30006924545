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
