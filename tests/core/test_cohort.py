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
  assert cohort.resolve(10) == ('sequential', 10)  # CPU: one client at a time is fastest
  strategy, chunk = cohort.resolve(10_000, cohort.ExecutionConfig(chunk_size=256))
  assert strategy == 'chunked' and chunk == 256
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


def test_sharded_over_8_cpu_devices_equals_single_device():
  import os
  import pathlib
  import subprocess
  import sys

  script = pathlib.Path(__file__).with_name('_sharded_check.py')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                       timeout=600)
  assert out.returncode == 0, out.stdout + out.stderr
  assert 'SHARDED OK' in out.stdout


@pytest.mark.parametrize('strategy', ['vmap', 'sequential'])
def test_fold_steps_skips_inactive_steps_exactly(strategy):
  xs = jnp.arange(1.0, 7.0)
  active = jnp.array([True, False, True, True, False, False])
  expected = 0.0
  for x, on in zip(np.asarray(xs), np.asarray(active)):
    expected = expected * 0.5 + x if on else expected

  def client(x, a):
    return cohort.fold_steps(lambda c, v: c * 0.5 + v, jnp.zeros(()), x, active=a)

  got = cohort.map_clients(client, (jnp.stack([xs, xs]), jnp.stack([active, active])), (0, 0),
                           cohort.ExecutionConfig(strategy))
  np.testing.assert_allclose(got, [expected, expected], rtol=1e-6)


def test_two_processes_on_localhost_equal_one_process():
  """jax.distributed over 2 CPU processes (gloo collectives): a FedAvg round as one process's."""
  import os
  import pathlib
  import socket
  import subprocess
  import sys

  script = str(pathlib.Path(__file__).with_name('_multihost_check.py'))
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = str(s.getsockname()[1])
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  workers = [
      subprocess.Popen([sys.executable, script, str(i), port], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, env=env)
      for i in (0, 1)
  ]
  reference = subprocess.run([sys.executable, script, '-1', port], capture_output=True, text=True,
                             env=env, timeout=300)
  outputs = [w.communicate(timeout=300)[0] for w in workers]
  assert reference.returncode == 0, reference.stderr
  assert all(w.returncode == 0 for w in workers), outputs

  def parse(text, key):
    line = next(line for line in text.splitlines() if line.startswith(key))
    return np.array([float(v) for v in line.split()[1:]])

  for out in outputs:
    np.testing.assert_allclose(parse(out, 'WEIGHTS'), parse(reference.stdout, 'WEIGHTS'),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(parse(out, 'LOSS'), parse(reference.stdout, 'LOSS'), rtol=1e-5)


def test_round_too_large_for_memory_names_a_chunk_size(monkeypatch):
  import flax.linen as nn

  import fedjax_like as fl
  from fedjax_like.data import Dataset

  spec = (jax.ShapeDtypeStruct((64,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
  model = fl.models.from_linen(nn.Dense(10), spec)
  rng = np.random.default_rng(0)
  clients = [
      Dataset((rng.normal(size=(8, 64)).astype(np.float32), np.zeros(8, np.int32))).batch(4)
      for _ in range(64)
  ]
  # Pretend the device has just enough memory for the data but not for 64 clients side by side.
  monkeypatch.setattr(cohort, '_device_memory_limit', lambda device: 400_000)
  with cohort.execution('chunked', chunk_size=64):
    process = fl.learning.algorithms.build_weighted_fed_avg(model, fl.learning.optimizers.build_sgdm(0.1))
    with pytest.raises(cohort.CohortTooLargeError, match=r"chunk_size=\d+"):
      process.next(process.initialize(), clients)
