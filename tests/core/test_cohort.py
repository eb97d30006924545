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


@pytest.mark.parametrize('loop', ['while', 'scan', 'unrolled'])
@pytest.mark.parametrize('strategy', ['vmap', 'sequential', 'chunked'])
def test_fold_steps_runs_only_active_steps_in_order(strategy, loop, monkeypatch):
  """Each client's active steps run in order (any mask, not only a prefix), and inactive steps
  leave the carry alone: it counts the steps that took effect."""
  masks = np.array([
      [True, False, True, True, False, False],  # gaps
      [True, True, True, True, True, True],  # all
      [False, False, False, False, False, False],  # none
      [True, True, False, False, False, False],  # a prefix, as packing makes
      [False, False, False, False, False, True],  # only the last
  ])
  xs = np.arange(1.0, 31.0).reshape(5, 6)
  expected = []
  for x, mask in zip(xs, masks, strict=True):
    value, ran = 0.0, 0
    for v, on in zip(x, mask, strict=True):
      if on:
        value, ran = value * 0.5 + v, ran + 1
    expected.append((value, ran))

  def client(x, a):
    step = lambda c, v: (c[0] * 0.5 + v, c[1] + 1)
    return cohort.fold_steps(step, (jnp.zeros(()), jnp.int32(0)), x, active=a)

  # 'while' is the CPU loop, 'scan' the accelerators' (static trip count), forced here.
  monkeypatch.setattr(cohort, '_loop_kind', lambda config: 'scan' if loop == 'scan' else 'while')
  config = cohort.ExecutionConfig(strategy, chunk_size=2, unroll_steps=loop == 'unrolled')
  run = lambda x, a: cohort.map_clients(client, (x, a), (0, 0), config)
  values, ran = jax.jit(run)(xs.astype(np.float32), masks)
  with cohort.using(config):
    local = str(jax.make_jaxpr(client)(xs[0].astype(np.float32), masks[0]))
  if loop == 'while':  # a loop over the active steps, not a scan over all six
    assert 'while' in local and 'scan' not in local, local
  else:
    assert 'scan' in local and 'cond' in local, local
  np.testing.assert_allclose(values, [v for v, _ in expected], rtol=1e-6)
  np.testing.assert_array_equal(ran, [n for _, n in expected])


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
