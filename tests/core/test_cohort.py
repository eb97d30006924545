"""The cohort engine: every strategy equals a NumPy loop over clients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_like.core import cohort

CASES = [('vmap', None), ('sequential', None), ('chunked', 2), ('chunked', 3), ('chunked', 7)]


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
  config = cohort.ExecutionConfig(strategy, chunk)
  stacked = jax.jit(lambda s, x, w: cohort.map_clients(client_fn, (s, x, w), (None, 0, 0), config))(
      shared, xs, ws
  )
  np.testing.assert_allclose(stacked['out'], np.stack([e['out'] for e in expected]), rtol=1e-5)
  summed = jax.jit(lambda s, x, w: cohort.sum_clients(client_fn, (s, x, w), (None, 0, 0), config))(
      shared, xs, ws
  )
  np.testing.assert_allclose(summed['out'], sum(e['out'] for e in expected), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(summed['w'], ws.sum(), rtol=1e-6)


def test_chunk_padding_never_leaks_nan():
  # A function that is NaN on an all-zero client: padding clients are zeros, yet the sum is clean.
  def fn(x):
    return jnp.sum(x) / jnp.sum(x)  # 1 for real clients, NaN for zeros

  xs = np.ones((5, 3), np.float32)
  config = cohort.ExecutionConfig('chunked', 4)  # 5 clients -> 3 padding clients
  total = jax.jit(lambda x: cohort.sum_clients(fn, (x,), (0,), config))(xs)
  assert float(total) == 5.0


def test_context_manager_and_auto_resolution():
  assert cohort.resolve(10) == ('vmap', 10)
  strategy, chunk = cohort.resolve(10_000)
  assert strategy == 'chunked' and chunk <= 10_000
  with cohort.execution('chunked', chunk_size=4):
    assert cohort.resolve(10) == ('chunked', 4)
  assert cohort.current_config().strategy == 'auto'


def test_bad_configuration_errors():
  with pytest.raises(ValueError, match='Unknown execution strategy'):
    cohort.ExecutionConfig('pmap')
  with pytest.raises(ValueError, match='chunk_size'):
    cohort.ExecutionConfig('chunked', 0)
  with pytest.raises(ValueError, match='leading cohort axis'):
    cohort.sum_clients(lambda a, b: a + b, (jnp.ones(3), jnp.ones(4)), (0, 0))
