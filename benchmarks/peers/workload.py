"""The shared FedAvg workload of the peer benchmark (stdlib + NumPy only).

Every peer script imports this module from its own virtual environment, so it
must not depend on anything but the standard library and NumPy (1.25 .. 2.x).

Workload
--------
* 10 clients x 64 examples of synthetic EMNIST-shaped data: images float32
  (28, 28, 1) in [0, 1], labels int32 in [0, 62).  The data is generated once
  from a fixed seed and saved to ``.work/emnist_synth_<seed>.npz``; every peer
  reads that same file.  Each class has a sparse random "stroke" prototype and
  an example is its class prototype with random intensity plus a little
  background noise, so the data is learnable and the accuracy check means
  something (chance is 1/62 ~ 1.6%).
* batch 16 (4 steps per client per round), 1 local epoch, examples in the
  stored order (no shuffling) in every peer.
* client SGD lr 0.1, no momentum, mean softmax cross-entropy over the batch.
* server SGD lr 1.0: plain FedAvg, server weights += example-weighted mean of
  client deltas (all clients have 64 examples, so the weights are equal).
* models: ``cnn``  conv3x3 32 relu (valid) -> conv3x3 64 relu (valid) ->
  maxpool 2x2 -> flatten (12*12*64 = 9216) -> dense 128 relu -> dense 62;
  ``linear`` flatten 784 -> dense 62.
* metric: seconds per round, median over the timed rounds after warm-up.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys

import numpy as np

NUM_CLIENTS = 10
EXAMPLES_PER_CLIENT = 64
NUM_CLASSES = 62
IMAGE_SHAPE = (28, 28, 1)
BATCH_SIZE = 16
LOCAL_EPOCHS = 1
CLIENT_LR = 0.1
SERVER_LR = 1.0
SEED = 20240607
MODELS = ('cnn', 'linear')
DEFAULT_ROUNDS = 5
DEFAULT_WARMUP = 2

HERE = os.path.dirname(os.path.abspath(__file__))
WORK_DIR = os.path.join(HERE, '.work')

# Correctness checks, on the training data after warm-up + timed rounds (>= 7
# rounds of 4 local steps x 10 clients): the loss is finite and below the
# initial loss, and the accuracy is above these floors.  Chance is 1/62; the
# linear model reaches ~100% within a round (a NumPy FedAvg reference does),
# the CNN with a framework-default init learns slowly at lr 0.1 in 28 local
# steps, so its floor is chance (the loss decrease is the real check there).
MIN_TRAIN_ACCURACY = {'linear': 0.5, 'cnn': 1.0 / NUM_CLASSES}


def data_path(seed: int = SEED) -> str:
  return os.path.join(WORK_DIR, f'emnist_synth_{seed}.npz')


def generate(seed: int = SEED):
  """Returns (x, y, client_ids) as NumPy arrays; deterministic in `seed`."""
  rng = np.random.default_rng(seed)
  n = NUM_CLIENTS * EXAMPLES_PER_CLIENT
  # Sparse per-class prototypes: ~12% of the pixels are "ink".
  protos = (rng.random((NUM_CLASSES,) + IMAGE_SHAPE) < 0.12).astype(np.float32)
  y = rng.integers(0, NUM_CLASSES, size=n).astype(np.int32)
  intensity = rng.uniform(0.6, 1.0, size=(n,) + IMAGE_SHAPE).astype(np.float32)
  noise = (rng.random((n,) + IMAGE_SHAPE) < 0.03).astype(np.float32)
  noise *= rng.uniform(0.0, 1.0, size=noise.shape).astype(np.float32)
  x = np.clip(protos[y] * intensity + noise, 0.0, 1.0).astype(np.float32)
  client_ids = np.repeat(np.arange(NUM_CLIENTS, dtype=np.int32), EXAMPLES_PER_CLIENT)
  return x, y, client_ids


def ensure_data(seed: int = SEED) -> str:
  """Generates the .npz once (atomically) and returns its path."""
  path = data_path(seed)
  if not os.path.exists(path):
    os.makedirs(WORK_DIR, exist_ok=True)
    x, y, cid = generate(seed)
    tmp = f'{path}.{os.getpid()}.tmp.npz'
    np.savez(tmp, x=x, y=y, client_ids=cid)
    os.replace(tmp, path)
  return path


def load_clients(seed: int = SEED):
  """Returns a list of NUM_CLIENTS (x, y) NumPy pairs, in client order."""
  with np.load(ensure_data(seed)) as f:
    x, y, cid = f['x'], f['y'], f['client_ids']
  assert x.shape == (NUM_CLIENTS * EXAMPLES_PER_CLIENT,) + IMAGE_SHAPE
  assert x.dtype == np.float32 and y.dtype == np.int32
  return [(x[cid == c], y[cid == c]) for c in range(NUM_CLIENTS)]


def load_all(seed: int = SEED):
  """All training data concatenated (client order), for the accuracy check."""
  clients = load_clients(seed)
  return (np.concatenate([c[0] for c in clients]), np.concatenate([c[1] for c in clients]))


def parse_args(peer: str, argv=None):
  import argparse

  p = argparse.ArgumentParser(description=f'FedAvg peer benchmark: {peer}')
  p.add_argument('--model', choices=MODELS, default='cnn')
  p.add_argument(
    '--rounds', type=int, default=DEFAULT_ROUNDS, help='timed rounds (>= 5 for the reported median)'
  )
  p.add_argument(
    '--warmup', type=int, default=DEFAULT_WARMUP, help='untimed warm-up rounds run first'
  )
  a = p.parse_args(argv)
  if a.rounds < 1 or a.warmup < 0:
    p.error('--rounds must be >= 1 and --warmup >= 0')
  return a


def check_and_report(
  *,
  peer,
  model,
  round_times,
  warmup,
  timer_includes,
  versions,
  final_loss,
  final_accuracy,
  initial_loss=None,
  extra=None,
):
  """Checks correctness and prints the ONE JSON result line to stdout.

  `round_times` holds every round's seconds, warm-up rounds first; the first
  `warmup` are dropped from the median.  Exits non-zero (after printing the
  line with "ok": false) if the loss is not finite or did not decrease from
  `initial_loss`, or the training accuracy is not above
  MIN_TRAIN_ACCURACY[model].
  """
  timed = [float(t) for t in round_times[warmup:]]
  problems = []
  if final_loss is None or not np.isfinite(final_loss):
    problems.append(f'final loss not finite: {final_loss}')
  elif initial_loss is not None and not final_loss < initial_loss:
    problems.append(f'loss did not decrease: {initial_loss} -> {final_loss}')
  floor = MIN_TRAIN_ACCURACY[model]
  if final_accuracy is None or not final_accuracy > floor:
    problems.append(f'train accuracy {final_accuracy} <= {floor:.4f}')
  result = {
    'peer': peer,
    'model': model,
    'sec_per_round_median': statistics.median(timed) if timed else None,
    'sec_per_round_all': timed,
    'warmup_sec': [float(t) for t in round_times[:warmup]],
    'timer_includes': timer_includes,
    'versions': dict(versions, python=platform.python_version(), numpy=np.__version__),
    'rounds': len(timed),
    'warmup': warmup,
    'final_train_loss': None if final_loss is None else float(final_loss),
    'final_train_accuracy': None if final_accuracy is None else float(final_accuracy),
    'initial_train_loss': None if initial_loss is None else float(initial_loss),
    'ok': not problems,
    'problems': problems,
  }
  if extra:
    result.update(extra)
  sys.stdout.write(json.dumps(result) + '\n')
  sys.stdout.flush()
  if problems:
    sys.exit(3)


def numpy_eval(logits_fn, x, y, batch=640):
  """Mean cross-entropy and accuracy of a logits function over NumPy data."""
  losses, correct = [], 0
  for i in range(0, len(x), batch):
    logits = np.asarray(logits_fn(x[i : i + batch]), dtype=np.float64)
    logits = logits - logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    yy = y[i : i + batch]
    losses.append(-logp[np.arange(len(yy)), yy])
    correct += int((logits.argmax(axis=1) == yy).sum())
  return float(np.concatenate(losses).mean()), correct / len(x)


if __name__ == '__main__':
  print(ensure_data())
