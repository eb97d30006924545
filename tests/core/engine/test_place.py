"""Placement over devices and hosts: 8 forced CPU devices and 2 processes equal one device."""

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np


def test_sharded_over_8_cpu_devices_equals_single_device():
  script = pathlib.Path(__file__).with_name('_sharded_check.py')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                       timeout=900)
  assert out.returncode == 0, out.stdout + out.stderr
  assert 'SHARDED OK' in out.stdout


def test_two_processes_on_localhost_equal_one_process():
  """jax.distributed over 2 CPU processes (gloo collectives): a FedAvg round as one process's."""
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
