"""The quickstart runs end to end, offline, and learns."""

import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_quickstart_runs_offline_and_accuracy_rises(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', FEDJAX_LIKE_CACHE=str(tmp_path / 'empty-cache'))
  out = subprocess.run(
      [sys.executable, str(ROOT / 'examples' / 'quickstart.py')],
      capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
  )
  assert out.returncode == 0, out.stderr
  assert 'offline digits' in out.stdout
  accuracies = [float(v) for v in re.findall(r'^([0-9.]+)$', out.stdout, flags=re.M)]
  assert len(accuracies) == 5
  assert accuracies[-1] > accuracies[0]
