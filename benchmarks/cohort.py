"""FedAvg throughput of the engine over models x cohort sizes x strategies.

    python -m benchmarks.cohort                      # CPU grid (cohorts 10 and 100)
    python -m benchmarks.cohort --cohorts 10 100 1000 10000   # on a GPU
    python -m benchmarks.cohort --models cnn --cohorts 10 --strategies vmap sequential --rounds 2

Workload: weighted FedAvg, client SGD lr 0.1, server SGD 1.0, batch 20, 1 local epoch, client sizes
drawn like federated EMNIST's (log-normal, mean about 226 examples, long tail), synthetic pixels.

Per cell it reports examples/s (real examples, padding excluded), rounds/s, compile time, the
compiled round's memory (XLA's own estimate: arguments + outputs + temporaries; on GPU also the
device's peak), the padding waste of the packed cohort (masked slots / all slots), and the
*reference*: the throughput of the same model's plain minibatch SGD step (``jax.grad`` + optax,
jitted, driven from Python) at the same batch size on the same machine, measured in the same run.
The reference is the limit for this workload; ``fraction`` is examples/s over it. The raw step is
measured with XLA's own kernels and with each of the engine's CPU lowerings (im2col convolutions;
the native convolution and dense-product kernels), and the fastest is the reference. Writes ``benchmarks/results/cohort-<backend>.json``
and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import fedjax_like as fl
from fedjax_like.core import cohort
from fedjax_like.data import Dataset, pack_cohort

BATCH = 20
OUT_DIR = pathlib.Path(__file__).resolve().parent / 'results'


class Logistic(nn.Module):
  """The seed quickstart's model: Dense(10) over 784 flattened pixels."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(10)(x.reshape(x.shape[0], -1))


class MLP(nn.Module):
  """A 2-layer MLP: 784 -> 200 -> 200 -> 62."""

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(200)(x))
    x = nn.relu(nn.Dense(200)(x))
    return nn.Dense(62)(x)


class CNN(nn.Module):
  """The EMNIST CNN of Reddi et al. 2020 (no dropout, as in the peer workload)."""

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], 28, 28, 1)
    x = nn.relu(nn.Conv(32, (3, 3), padding='VALID')(x))
    x = nn.relu(nn.Conv(64, (3, 3), padding='VALID')(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(128)(x))
    return nn.Dense(62)(x)


MODELS = {'logistic': (Logistic, 10), 'mlp': (MLP, 62), 'cnn': (CNN, 62)}
SPEC_X = jax.ShapeDtypeStruct((28, 28), jnp.float32)
SPEC_Y = jax.ShapeDtypeStruct((), jnp.int32)


def emnist_like_sizes(num_clients: int, seed: int) -> np.ndarray:
  """Client sizes with federated EMNIST's shape: log-normal, mean about 226, long tail."""
  rng = np.random.default_rng(seed)
  sigma = 0.6
  sizes = rng.lognormal(np.log(226) - sigma**2 / 2, sigma, num_clients)
  return np.clip(np.round(sizes), 10, 1200).astype(int)


def make_cohort(num_clients: int, num_classes: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  batched = []
  for i, n in enumerate(emnist_like_sizes(num_clients, seed)):
    x = rng.uniform(size=(n, 28, 28)).astype(np.float32)
    y = rng.integers(0, num_classes, n).astype(np.int32)
    batched.append(Dataset((x, y), client_id=f'c{i}').batch(BATCH))
  # Longest first, as process.next orders a list of datasets itself (a pre-packed cohort in
  # another order would be copied into that order every round).
  return pack_cohort(sorted(batched, key=lambda d: -d.num_batches))


def raw_step_throughput(module, num_classes, lowering, seconds=3.0):
  """examples/s of a plain jitted SGD step driven from Python (the reference)."""
  params = module.init(jax.random.key(0), jnp.zeros((1, 28, 28)))
  opt = optax.sgd(0.1)
  apply = lambda p, x: module.apply(p, x)
  if lowering != 'xla':  # the engine's lowerings: im2col convolutions, or every native kernel
    dense = 'native' if lowering == 'native' else 'xla'
    apply = fl.core.engine.lowering.lower(apply, lowering, dense)

  def loss(p, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y).mean()

  @jax.jit
  def step(p, s, x, y):
    g = jax.grad(loss)(p, x, y)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s

  rng = np.random.default_rng(0)
  xs = jnp.asarray(rng.uniform(size=(8, BATCH, 28, 28)).astype(np.float32))
  ys = jnp.asarray(rng.integers(0, num_classes, (8, BATCH)).astype(np.int32))
  state = opt.init(params)
  params, state = step(params, state, xs[0], ys[0])
  jax.block_until_ready(params)
  steps, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds or steps < 8:
    params, state = step(params, state, xs[steps % 8], ys[steps % 8])
    steps += 1
  jax.block_until_ready(params)
  return steps * BATCH / (time.perf_counter() - start)


def memory_of(process) -> dict:
  """XLA's memory estimate of the round as the process compiled it (arguments: the cohort as packed
  blocks, the state; plus outputs and temporaries), and the device's peak where it reports one."""
  out = {}
  compiled = process._last_compiled
  analysis = compiled.memory_analysis() if compiled is not None else None
  if analysis is not None:
    out['argument_bytes'] = int(analysis.argument_size_in_bytes)
    out['compiled_bytes'] = int(
        analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        + analysis.temp_size_in_bytes
    )
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    out['device_peak_bytes'] = int(stats['peak_bytes_in_use'])
  return out


def run_cell(model_name, num_clients, strategy, rounds, chunk_size, lowering):
  module_cls, num_classes = MODELS[model_name]
  model = fl.models.from_linen(module_cls(), (SPEC_X, SPEC_Y))
  packed = make_cohort(num_clients, num_classes)
  examples = int(packed.num_examples.sum())
  with cohort.execution(strategy, chunk_size=chunk_size, conv_lowering=lowering):
    process = fl.learning.algorithms.build_weighted_fed_avg(
        model, fl.learning.optimizers.build_sgdm(0.1)
    )
    state = process.initialize()
    start = time.perf_counter()
    state, metrics = process.next(state, packed)
    jax.block_until_ready(state)
    first = time.perf_counter() - start
    times = []
    for _ in range(rounds):
      start = time.perf_counter()
      state, metrics = process.next(state, packed)
      jax.block_until_ready(state)
      times.append(time.perf_counter() - start)
    memory = memory_of(process)
  per_round = float(np.median(times))
  return {
      'model': model_name,
      'cohort': num_clients,
      'strategy': strategy + (f'/{chunk_size}' if chunk_size else ''),
      'lowering': lowering,
      'examples_per_round': examples,
      'examples_per_s': examples / per_round,
      'rounds_per_s': 1.0 / per_round,
      'compile_s': max(first - per_round, 0.0),
      # Masked steps / computed steps as the round ran (0 under sequential, which skips padding
      # steps; step groups under vmap/chunked); and what one padded block would have computed.
      'padding_waste': process.padding_waste,
      # The cohort's arrays as one padded [clients, longest, batch, ...] block (the round's
      # arguments hold the blocks of its step groups instead: argument_bytes).
      'padded_data_bytes': int(sum(x.nbytes for x in jax.tree.leaves(packed.batches))),
      'ungrouped_waste': float(1 - (packed.mask.any(axis=2).sum() / packed.mask[:, :, 0].size)),
      'loss': float(metrics['client_work']['train']['loss']),
      **memory,
  }


def overlap_report(model_name='mlp', num_clients=30, rounds=4) -> dict:
  """Host packing of round t+1 overlapping device work of round t (JAX dispatches asynchronously).

  ``serial``: pack, run, block, repeat. ``pipelined``: pack the next cohort while the current
  round runs, block only on the previous round's metrics (what the training loop does).
  """
  module_cls, num_classes = MODELS[model_name]
  model = fl.models.from_linen(module_cls(), (SPEC_X, SPEC_Y))
  process = fl.learning.algorithms.build_weighted_fed_avg(
      model, fl.learning.optimizers.build_sgdm(0.1)
  )
  cohorts = [make_cohort(num_clients, num_classes, seed=r) for r in range(rounds + 1)]
  steps = max(c.num_steps for c in cohorts)  # one shape for every round: no recompilation
  state = process.initialize()

  def pack(r):  # stands in for the host work of a round: re-batch and pack the clients' data
    old = cohorts[r]
    x, y = old.batches
    datasets = [
        Dataset((x[i][old.mask[i]], y[i][old.mask[i]]), client_id=f'c{i}').batch(BATCH)
        for i in range(old.num_clients)
    ]
    return pack_cohort(datasets, num_steps=steps)

  state, _ = process.next(state, pack(0))  # compile
  jax.block_until_ready(state)

  start = time.perf_counter()
  for r in range(rounds):
    packed = pack(r)
    state, metrics = process.next(state, packed)
    jax.block_until_ready(metrics)
  serial = (time.perf_counter() - start) / rounds
  start = time.perf_counter()
  packed, previous = pack(0), None
  for r in range(rounds):
    state, metrics = process.next(state, packed)
    if r + 1 < rounds:
      packed = pack(r + 1)  # host work while the device runs round r
    if previous is not None:
      jax.block_until_ready(previous)
    previous = metrics
  jax.block_until_ready(previous)
  pipelined = (time.perf_counter() - start) / rounds
  start = time.perf_counter()
  for r in range(rounds):
    pack(r)
  pack_only = (time.perf_counter() - start) / rounds
  return {'model': model_name, 'cohort': num_clients, 'serial_s': serial,
          'pipelined_s': pipelined, 'pack_s': pack_only}


def machine() -> dict:
  cpu = platform.processor()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  return {
      'backend': jax.default_backend(),
      'devices': [d.device_kind for d in jax.devices()],
      'cpu': cpu,
      'cores': os.cpu_count(),
      'jax': jax.__version__,
      'flax': __import__('flax').__version__,
      'optax': optax.__version__,
      'python': platform.python_version(),
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument('--models', nargs='+', default=['logistic', 'mlp', 'cnn'], choices=list(MODELS))
  parser.add_argument('--cohorts', nargs='+', type=int, default=None)
  parser.add_argument('--strategies', nargs='+', default=['vmap', 'sequential', 'chunked'])
  parser.add_argument('--chunk-size', type=int, default=16)
  parser.add_argument('--rounds', type=int, default=3, help='timed rounds per cell (median)')
  parser.add_argument('--lowering', default='auto', choices=['auto', 'native', 'im2col', 'xla'])
  parser.add_argument('--tag', default='', help='suffix of the results file (keeps earlier runs)')
  parser.add_argument('--max-cnn-cohort', type=int, default=None,
                      help='skip CNN cells above this cohort (CPU default: 10)')
  args = parser.parse_args(argv)
  on_cpu = jax.default_backend() == 'cpu'
  cohorts = args.cohorts or ([10, 100] if on_cpu else [10, 100, 1000, 10000])
  max_cnn = args.max_cnn_cohort or (10 if on_cpu else 10**9)
  info = machine()
  print(f'# {info}')
  rows = []
  for model_name in args.models:
    module_cls, num_classes = MODELS[model_name]
    refs = {
        low: raw_step_throughput(module_cls(), num_classes, low)
        for low in (['xla', 'im2col', 'native'] if model_name == 'cnn' else ['xla', 'native'])
    }
    reference = max(refs.values())
    for num_clients in cohorts:
      if model_name == 'cnn' and num_clients > max_cnn:
        continue
      for strategy in args.strategies:
        if strategy == 'vmap' and num_clients > 1000:
          continue  # whole-cohort vmap of 10,000 clients is what chunking is for
        chunk = args.chunk_size if strategy == 'chunked' else None
        row = run_cell(model_name, num_clients, strategy, args.rounds, chunk, args.lowering)
        row['reference_examples_per_s'] = reference
        row['reference_by_lowering'] = refs
        row['fraction_of_reference'] = row['examples_per_s'] / reference
        rows.append(row)
        print(
            f"{model_name:8s} cohort {num_clients:5d} {row['strategy']:12s} "
            f"{row['examples_per_s']:9.0f} ex/s  {row['fraction_of_reference']:5.2f} of ref "
            f"({reference:.0f})  compile {row['compile_s']:.1f}s  waste {row['padding_waste']:.2f}",
            flush=True,
        )
  print()
  print('| model | cohort | strategy | examples/s | rounds/s | reference ex/s | fraction | '
        'compile s | memory MB | data MB (one padded block) | padding waste (ungrouped) |')
  print('|---|---|---|---|---|---|---|---|---|---|---|')
  for r in rows:
    mem = r.get('device_peak_bytes', r.get('compiled_bytes', 0)) / 2**20
    print(
        f"| {r['model']} | {r['cohort']} | {r['strategy']} | {r['examples_per_s']:.0f} | "
        f"{r['rounds_per_s']:.3f} | {r['reference_examples_per_s']:.0f} | "
        f"{r['fraction_of_reference']:.2f} | {r['compile_s']:.1f} | {mem:.0f} | "
        f"{r.get('argument_bytes', 0) / 2**20:.0f} ({r['padded_data_bytes'] / 2**20:.0f}) | "
        f"{r['padding_waste']:.2f} ({r['ungrouped_waste']:.2f}) |"
    )
  overlap = overlap_report()
  print(
      f"\nhost/device overlap ({overlap['model']}, cohort {overlap['cohort']}): packing "
      f"{overlap['pack_s']:.3f} s/round; serial {overlap['serial_s']:.3f} s/round, pipelined "
      f"{overlap['pipelined_s']:.3f} s/round"
  )
  OUT_DIR.mkdir(exist_ok=True)
  path = OUT_DIR / f"cohort-{info['backend']}{args.tag}.json"
  path.write_text(json.dumps({'machine': info, 'rows': rows, 'overlap': overlap}, indent=1))
  print(f'\nwrote {path}')


if __name__ == '__main__':
  main()
