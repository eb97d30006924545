"""The fixed cost of a round, and a round against the raw SGD step and FedJAX, on small models.

    python -m benchmarks.overhead                       # 5 interleaved repeats, linear model
    python -m benchmarks.overhead --repeats 3 --devices 1 2

Workload: the peer benchmark's (``benchmarks/peers/workload.py``): 10 clients x 64 synthetic
EMNIST-shaped examples, batch 16, one local epoch of SGD 0.1, server SGD 1.0, the linear
784 -> 62 model. Every cell runs in its own process (the CPU device count is fixed when JAX
starts), the cells of one repeat back to back and the repeats interleaved, so each ratio is
measured side by side on this shared machine. Cells:

* ``raw``: the model's plain jitted SGD step (``jax.grad`` + optax, batches already on the device)
  driven from Python over the round's 40 batches: the work of a round without a framework.
* ``floor``: FedAvg's arithmetic and nothing else, as one jitted function on one device: a
  ``scan`` over the 10 clients of a ``scan`` over their 4 SGD steps (each client starting from
  the server weights), the example-weighted mean of the deltas and the server's SGD step, data
  already on the device. What XLA's own kernels make of the round with no framework at all (no
  metrics, no non-finite guard, no padding): a floor for any framework built on them.
* ``ours d=N``: ``process.next(state, packed cohort)`` until the new weights are ready, with JAX
  making ``N`` CPU devices (``JAX_NUM_CPU_DEVICES``; the engine shards the cohort over them).
* ``fixed d=N``: the fixed cost of a round: rounds over the same 10 clients cut to 1, 2 and 4
  batches are timed and a line is fitted to seconds against batches per client; its intercept is
  what a round costs with no steps (host work, dispatch, aggregation, server update) and its
  slope the cost of one step of all 10 clients.
* ``fedjax``: FedJAX 0.0.17's ``fed_avg`` on the same data (``benchmarks/peers/peer_fedjax.py``
  in its venv; ``bash benchmarks/peers/setup.sh fedjax`` makes it; skipped, saying so, without).

Prints a table (medians over the repeats, and the per-repeat ratios' median) and writes
``benchmarks/results/overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
PEERS = ROOT / 'benchmarks' / 'peers'
FEDJAX_PYTHON = PEERS / '.venvs' / 'fedjax' / 'bin' / 'python'
BATCHES = (1, 2, 4)  # batches per client for the fixed-cost fit


def _setup(batches_per_client: int = 4):
  """The model, the packed cohort (each client cut to ``batches_per_client`` batches of 16) and
  the FedAvg process of the peer workload."""
  sys.path.insert(0, str(PEERS))
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import workload

  import fedjax_like as fl
  from fedjax_like.data import Dataset, pack_cohort

  class Linear(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(workload.NUM_CLASSES)(x.reshape(x.shape[0], -1))

  spec = (jax.ShapeDtypeStruct(workload.IMAGE_SHAPE, jnp.float32),
          jax.ShapeDtypeStruct((), jnp.int32))
  model = fl.models.from_linen(Linear(), spec)
  n = batches_per_client * workload.BATCH_SIZE
  clients = [(x[:n], y[:n]) for x, y in workload.load_clients()]
  packed = pack_cohort([Dataset((x, y), client_id=str(i)).batch(workload.BATCH_SIZE)
                        for i, (x, y) in enumerate(clients)])
  process = fl.learning.algorithms.build_weighted_fed_avg(
      model, fl.learning.optimizers.build_sgdm(workload.CLIENT_LR),
      server_optimizer_fn=fl.learning.optimizers.build_sgdm(workload.SERVER_LR))
  return Linear(), clients, packed, process


def _time_rounds(run_round, rounds: int, warmup: int) -> float:
  times = []
  for _ in range(warmup + rounds):
    start = time.perf_counter()
    run_round()
    times.append(time.perf_counter() - start)
  return statistics.median(times[warmup:])


def _loss(module):
  """The mean cross-entropy of ``module``'s logits on a batch: ``loss(params, x, y)``."""
  import optax

  def loss(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(module.apply(params, x), y).mean()

  return loss


def worker_raw(rounds: int, warmup: int) -> dict:
  import jax
  import jax.numpy as jnp
  import optax

  module, clients, _, _ = _setup()
  params = module.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  opt = optax.sgd(0.1)
  loss = _loss(module)

  @jax.jit
  def step(p, s, x, y):
    u, s = opt.update(jax.grad(loss)(p, x, y), s, p)
    return optax.apply_updates(p, u), s

  batches = [(jnp.asarray(x[i:i + 16]), jnp.asarray(y[i:i + 16]))
             for x, y in clients for i in range(0, len(y), 16)]
  carry = [params, opt.init(params)]

  def one_round():
    p, s = carry
    for x, y in batches:
      p, s = step(p, s, x, y)
    jax.block_until_ready(p)
    carry[:] = [p, s]

  return {'s_per_round': _time_rounds(one_round, rounds, warmup), 'steps': len(batches)}


def _floor_round(module, clients):
  """The floor cell's round ``(server weights) -> server weights``, with its data on the device
  (clients of equal size, ``[clients, steps, batch, ...]``)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import workload  # on the path after _setup

  batch = workload.BATCH_SIZE
  x = jnp.asarray(np.stack([c[0].reshape(-1, batch, *c[0].shape[1:]) for c in clients]))
  y = jnp.asarray(np.stack([c[1].reshape(-1, batch) for c in clients]))
  weights = jnp.full((len(clients),), float(y.shape[1] * y.shape[2]))  # examples per client
  loss = _loss(module)

  def sgd_step(params, xy):
    grads = jax.grad(loss)(params, *xy)
    return jax.tree.map(lambda p, g: p - workload.CLIENT_LR * g, params, grads), None

  @jax.jit
  def one_round(server, x, y, weights):
    def client(total, data):
      xs, ys, weight = data
      local, _ = jax.lax.scan(sgd_step, server, (xs, ys))
      return jax.tree.map(lambda t, a, b: t + weight * (a - b), total, local, server), None

    total, _ = jax.lax.scan(client, jax.tree.map(jnp.zeros_like, server), (x, y, weights))
    mean = jax.tree.map(lambda t: t / weights.sum(), total)
    return jax.tree.map(lambda s, d: s + workload.SERVER_LR * d, server, mean)

  return lambda server: one_round(server, x, y, weights)


def worker_floor(rounds: int, warmup: int) -> dict:
  import jax
  import jax.numpy as jnp

  module, clients, _, _ = _setup()
  one_round = _floor_round(module, clients)
  carry = [module.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))]

  def run_round():
    carry[0] = one_round(carry[0])
    jax.block_until_ready(carry[0])

  return {'s_per_round': _time_rounds(run_round, rounds, warmup), 'steps': 4 * len(clients)}


def worker_ours(rounds: int, warmup: int, batches_per_client: int = 4) -> dict:
  import jax

  _, _, packed, process = _setup(batches_per_client)
  state = [process.initialize()]

  def one_round():
    state[0], _ = process.next(state[0], packed)
    jax.block_until_ready(state[0].global_model_weights)

  seconds = _time_rounds(one_round, rounds, warmup)
  import fedjax_like as fl

  return {'s_per_round': seconds, 'devices': jax.device_count(),
          'strategy': fl.Runtime().strategy_for(packed.num_clients)}


def worker_fixed(rounds: int, warmup: int) -> dict:
  points = [(b, worker_ours(rounds, warmup, b)['s_per_round']) for b in BATCHES]
  xs, ys = [b for b, _ in points], [s for _, s in points]
  mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
  slope = (sum((x - mean_x) * (y - mean_y) for x, y in points)
           / sum((x - mean_x) ** 2 for x in xs))
  return {'intercept_s': mean_y - slope * mean_x, 'per_step_s': slope, 'points': points}


def _run_cell(command: list[str], env: dict | None = None, timeout: int = 900) -> dict:
  result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu', **(env or {})})
  lines = [line for line in result.stdout.splitlines() if line.startswith('{')]
  if result.returncode != 0 or not lines:
    raise RuntimeError(f'{" ".join(command)} failed:\n{result.stderr[-3000:]}')
  return json.loads(lines[-1])


def _cells(devices: list[int], rounds: int, warmup: int, fedjax: bool) -> dict:
  """Commands of one repeat: name -> (argv, env)."""
  me = [sys.executable, '-m', 'benchmarks.overhead', '--rounds', str(rounds), '--warmup',
        str(warmup), '--worker']
  one = {'JAX_NUM_CPU_DEVICES': '1'}
  cells = {'raw': (me + ['raw'], one), 'floor': (me + ['floor'], one)}
  for d in devices:
    cells[f'ours d={d}'] = (me + ['ours'], {'JAX_NUM_CPU_DEVICES': str(d)})
    cells[f'fixed d={d}'] = (me + ['fixed'], {'JAX_NUM_CPU_DEVICES': str(d)})
  if fedjax:
    cells['fedjax'] = ([str(FEDJAX_PYTHON), str(PEERS / 'peer_fedjax.py'), '--model', 'linear',
                        '--rounds', str(rounds), '--warmup', str(warmup)], None)
  return cells


def _seconds(name: str, result: dict) -> float:
  if name.startswith('fixed'):
    return result['intercept_s']
  return result.get('s_per_round', result.get('sec_per_round_median'))


def _median_ratio(numerators: list, denominators: list) -> float:
  """The median over repeats of one repeat's ratio (both measured side by side)."""
  return statistics.median(a / b for a, b in zip(numerators, denominators, strict=True))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--rounds', type=int, default=30, help='timed rounds per cell')
  parser.add_argument('--warmup', type=int, default=5, help='untimed rounds first')
  parser.add_argument('--devices', type=int, nargs='+', default=None,
                      help='CPU device counts for our cells (default: 1 and one per core)')
  parser.add_argument('--worker', choices=('raw', 'floor', 'ours', 'fixed'), help=argparse.SUPPRESS)
  parser.add_argument('--output', default=str(ROOT / 'benchmarks' / 'results' / 'overhead.json'))
  args = parser.parse_args(argv)
  if args.worker:
    work = {'raw': worker_raw, 'floor': worker_floor, 'ours': worker_ours,
            'fixed': worker_fixed}[args.worker]
    print(json.dumps(work(args.rounds, args.warmup)))
    return
  devices = args.devices or sorted({1, os.cpu_count() or 1})
  fedjax = FEDJAX_PYTHON.exists()
  if not fedjax:
    print(f'FedJAX skipped: no venv at {FEDJAX_PYTHON} (bash benchmarks/peers/setup.sh fedjax)')
  runs: dict[str, list] = {}
  for repeat in range(args.repeats):
    for name, (command, env) in _cells(devices, args.rounds, args.warmup, fedjax).items():
      result = _run_cell(command, env)
      runs.setdefault(name, []).append(result)
      print(f'[repeat {repeat}] {name}: {_seconds(name, result) * 1e3:.2f} ms', flush=True)
  seconds = {name: [_seconds(name, r) for r in results] for name, results in runs.items()}
  rows = ['| cell | ms/round (median) | raw / cell | fedjax / cell |', '|---|---|---|---|']
  for name, values in seconds.items():
    raw_ratio = _median_ratio(seconds['raw'], values)
    fed = f"{_median_ratio(seconds['fedjax'], values):.2f}x" if fedjax else '-'
    label = f'{name} (intercept)' if name.startswith('fixed') else name
    rows.append(f'| {label} | {statistics.median(values) * 1e3:.2f} | {raw_ratio:.2f} | {fed} |')
  for d in devices:
    per_step = statistics.median(r['per_step_s'] for r in runs[f'fixed d={d}'])
    rows.append(f'| fixed d={d}: one step of all clients (slope) | {per_step * 1e3:.2f} | | |')
  table = '\n'.join(rows)
  print(table)
  record = {
      'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
      'machine': f'{platform.platform()}, {os.cpu_count()} CPU cores',
      'python': platform.python_version(), 'repeats': args.repeats, 'rounds': args.rounds,
      'seconds': seconds, 'runs': runs, 'table': table,
  }
  pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(args.output).write_text(json.dumps(record, indent=1))
  print(f'wrote {args.output}')


if __name__ == '__main__':
  main()
