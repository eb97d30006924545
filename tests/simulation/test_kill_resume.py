"""SIGKILL in the middle of a checkpoint write, then resume: same final weights, bit for bit.

Three real CLI processes: an uninterrupted run; a run that is SIGKILLed while it writes the
checkpoint of round 6 (everything written into orbax's temporary directory, the commit rename not
yet done); and the same command again, which resumes from round 4, the last complete checkpoint.
The runs go through ``python -m fedjax_like train``, so this also tests the module entry point.
"""

import csv
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from fedjax_like.simulation import config as config_lib
from fedjax_like.simulation.checkpoint import Checkpointer
from fedjax_like.simulation.experiment import build_experiment

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Runs the CLI with orbax's commit step (the rename of the temporary directory) stalled at one
# round, so the parent can SIGKILL the process while that checkpoint is half-written.
_STALLED_CHILD = """
import inspect, os, sys, time
from orbax.checkpoint._src.path import atomicity

original = atomicity.AtomicRenameTemporaryPath.finalize

def stall(path):
  if path.get_final().name == os.environ['STALL_ROUND']:
    with open(os.environ['STALL_MARKER'], 'w') as f:
      f.write(str(path.get()))
    time.sleep(600)

async def stalled_finalize(self, *args, **kwargs):  # orbax >= 0.11.x: a coroutine
  stall(self)
  return await original(self, *args, **kwargs)

def stalled_finalize_sync(self, *args, **kwargs):  # orbax 0.11.0 (the floor): a function
  stall(self)
  return original(self, *args, **kwargs)

if not inspect.iscoroutinefunction(original):
  stalled_finalize = stalled_finalize_sync

atomicity.AtomicRenameTemporaryPath.finalize = stalled_finalize
from fedjax_like.simulation import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def _args(root):
  return [
      'train',
      '--config',
      str(ROOT / 'fedjax_like' / 'configs' / 'digits.toml'),
      '--output.root',
      str(root),
      '--training.num_rounds',
      '8',
      '--training.clients_per_round',
      '5',
      '--training.client_epochs',
      '1',
      '--output.checkpoint_every',
      '2',
      '--evaluation.every',
      '0',
      '--output.tensorboard',
      'false',
      '--output.plot',
      'false',
  ]


def _env():
  return dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(ROOT))


def _final_state(root):
  config = config_lib.load_config(str(ROOT / 'fedjax_like' / 'configs' / 'digits.toml'))
  template = build_experiment(config).process.initialize()
  return Checkpointer(root / 'digits_fedavg' / 'checkpoints').restore(template, round_num=8)


def _rows(root):
  with open(root / 'digits_fedavg' / 'metrics.csv') as f:
    return [{k: v for k, v in r.items() if k != 'elapsed_s'} for r in csv.DictReader(f)]


def test_sigkill_during_checkpoint_write_then_resume_is_exact(tmp_path):
  reference_root, killed_root = tmp_path / 'reference', tmp_path / 'killed'
  done = subprocess.run(
      [sys.executable, '-m', 'fedjax_like', *_args(reference_root)],
      capture_output=True,
      text=True,
      timeout=300,
      env=_env(),
      cwd=ROOT,
  )
  assert done.returncode == 0, done.stderr
  assert 'metrics CSV' in done.stdout and 'round/s' not in done.stderr  # no bar off a terminal

  marker = tmp_path / 'stalled'
  env = dict(_env(), STALL_ROUND='6', STALL_MARKER=str(marker))
  child = subprocess.Popen(
      [sys.executable, '-c', _STALLED_CHILD, *_args(killed_root)],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      env=env,
      cwd=ROOT,
  )
  try:
    deadline = time.monotonic() + 240
    while not marker.exists():
      assert child.poll() is None, child.communicate()
      assert time.monotonic() < deadline, 'the child never reached the checkpoint of round 6'
      time.sleep(0.1)
  finally:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
  assert child.returncode == -signal.SIGKILL

  checkpoints = killed_root / 'digits_fedavg' / 'checkpoints'
  names = sorted(p.name for p in checkpoints.iterdir())
  assert '6' not in names and any(n.startswith('6.orbax-checkpoint-tmp') for n in names), names
  assert sorted(n for n in names if n.isdigit()) == ['2', '4']  # committed: 4 is the latest

  resumed = subprocess.run(
      [sys.executable, '-m', 'fedjax_like', *_args(killed_root)],
      capture_output=True,
      text=True,
      timeout=300,
      env=_env(),
      cwd=ROOT,
  )
  assert resumed.returncode == 0, resumed.stderr
  assert 'resumed after round 4' in resumed.stdout  # not from the half-written round 6
  assert not [p for p in checkpoints.iterdir() if 'tmp' in p.name]  # the partial write is gone

  reference, _ = _final_state(reference_root)
  result, result_meta = _final_state(killed_root)
  for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(result), strict=True):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
  assert _rows(killed_root) == _rows(reference_root)  # every round once, same metrics
  assert [r['round'] for r in result_meta['history']] == list(range(1, 9))
