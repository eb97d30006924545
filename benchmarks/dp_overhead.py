"""What DP-FedAvg with adaptive clipping costs per round over FedAvg, side by side.

    python -m benchmarks.dp_overhead                          # EMNIST CNN, cohorts 10 and 100, CPU
    python -m benchmarks.dp_overhead --cohorts 10 --rounds 9 --model logistic

Both processes are ``build_unweighted_fed_avg`` with client SGD 0.1 on the same packed cohort
(EMNIST-like client sizes, synthetic pixels, batch 20, 1 epoch); the DP one adds
``fl.learning.dp_aggregator(z, cohort)`` (TFF's: adaptive zeroing around adaptive-clip Gaussian
noise), so the only difference is the aggregator: each client's L-infinity norm, L2 norm and
clipping, the clipped and zeroed counts in the round's one sum, and the server's noise. The two
are compiled first, then their rounds alternate (FedAvg, DP, FedAvg, DP, ...) so that a noisy
machine slows both alike; the overhead is the median over pairs of DP time / FedAvg time - 1
(also the ratio of the medians). On a busy machine the pairs still swing, so it also times the
two aggregators alone, jitted over the cohort's stacked random updates of the model's shape
(``aggregation`` columns: unweighted mean vs ``dp_aggregator``, median of 20 calls): the cost the
DP aggregator adds, without training's noise around it. Writes
``benchmarks/results/dp-overhead-<backend>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import fedjax_like as fl
from benchmarks.cohort import emnist_like_sizes
from fedjax_like.data import Dataset, pack_cohort

OUT_DIR = pathlib.Path(__file__).resolve().parent / 'results'


def make_cohort(model, num_clients: int, seed: int = 0):
  """Clients with EMNIST-like sizes, pixels shaped as the model's input, batches of 20."""
  rng = np.random.default_rng(seed)
  x_shape = tuple(model.input_spec[0].shape)
  datasets = []
  for i, n in enumerate(emnist_like_sizes(num_clients, seed)):
    x = rng.uniform(size=(n, *x_shape)).astype(np.float32)
    y = rng.integers(0, 62, n).astype(np.int32)
    datasets.append(Dataset((x, y), client_id=f'c{i}').batch(20))
  return pack_cohort(sorted(datasets, key=lambda d: -d.num_batches))


def timed_round(process, state, cohort):
  start = time.perf_counter()
  state, metrics = process.next(state, cohort)
  jax.block_until_ready(state)
  return state, metrics, time.perf_counter() - start


def aggregation_seconds(model, cohort_size: int, noise_multiplier: float, calls: int = 20):
  """Median seconds of one jitted ``next`` of the unweighted mean and of ``dp_aggregator`` over
  ``cohort_size`` stacked random updates shaped as ``model``'s trainable weights."""
  from fedjax_like.aggregators import UnweightedMeanFactory, tensor_type
  from fedjax_like.core import CLIENTS, FederatedValue

  trainable = model.init_fn(jax.random.key(0)).trainable
  value_type = tensor_type(trainable)
  rng = np.random.default_rng(0)
  stacked = jax.tree.map(
      lambda x: jnp.asarray(rng.normal(size=(cohort_size, *x.shape)).astype(np.float32) * 0.01),
      trainable,
  )
  out = {}
  factories = {'mean': UnweightedMeanFactory(),
               'dp': fl.learning.dp_aggregator(noise_multiplier, cohort_size, seed=0)}
  for name, factory in factories.items():
    process = factory.create(value_type)

    @jax.jit
    def step(state, values, process=process):
      result = process.next(state, FederatedValue(values, CLIENTS))
      return result.state, result.result.value

    state = process.initialize()
    state, result = step(state, stacked)
    jax.block_until_ready(result)
    times = []
    for _ in range(calls):
      start = time.perf_counter()
      state, result = step(state, stacked)
      jax.block_until_ready(result)
      times.append(time.perf_counter() - start)
    out[name] = float(np.median(times))
  return out


def run_pair(model_name: str, cohort_size: int, rounds: int, noise_multiplier: float) -> dict:
  model = fl.models.zoo.create_model(model_name, 62)
  cohort = make_cohort(model, cohort_size)
  client_optimizer = fl.learning.optimizers.build_sgdm(0.1)
  plain = fl.learning.algorithms.build_unweighted_fed_avg(model, client_optimizer)
  private = fl.learning.algorithms.build_unweighted_fed_avg(
      model, client_optimizer,
      model_aggregator=fl.learning.dp_aggregator(noise_multiplier, cohort_size, seed=0),
  )
  states, first = {}, {}
  for name, process in (('fedavg', plain), ('dp', private)):
    states[name], _, first[name] = timed_round(process, process.initialize(), cohort)
  times = {'fedavg': [], 'dp': []}
  metrics = {}
  for _ in range(rounds):
    for name, process in (('fedavg', plain), ('dp', private)):
      states[name], metrics[name], seconds = timed_round(process, states[name], cohort)
      times[name].append(seconds)
  ratios = np.asarray(times['dp']) / np.asarray(times['fedavg'])
  base, dp = float(np.median(times['fedavg'])), float(np.median(times['dp']))
  return {
      'model': model_name,
      'cohort': cohort_size,
      'noise_multiplier': noise_multiplier,
      'examples_per_round': int(cohort.num_examples.sum()),
      'strategy': fl.core.engine.default_runtime().strategy_for(cohort_size),
      'fedavg_s': times['fedavg'],
      'dp_s': times['dp'],
      'fedavg_median_s': base,
      'dp_median_s': dp,
      'overhead_median_of_ratios': float(np.median(ratios) - 1.0),
      'overhead_ratio_of_medians': dp / base - 1.0,
      'first_round_s': first,
      'clip': float(metrics['dp']['aggregator']['zeroing']['dp_query_metrics']['clip']),
      'aggregation_s': aggregation_seconds(model, cohort_size, noise_multiplier),
  }


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model', default='cnn', choices=['logistic', 'mlp', 'cnn'])
  parser.add_argument('--cohorts', type=int, nargs='+', default=[10, 100])
  parser.add_argument('--rounds', type=int, default=5, help='timed rounds of each process')
  parser.add_argument('--tag', default='', help='suffix of the results file name')
  args = parser.parse_args(argv)
  rows = []
  for cohort_size in args.cohorts:
    # dp_aggregator needs z below 0.1 * cohort (its clipped-count noise); 1.0 where allowed.
    z = min(1.0, 0.05 * cohort_size)
    rows.append(run_pair(args.model, cohort_size, args.rounds, z))
    row = rows[-1]
    agg = row['aggregation_s']
    print(f"{row['model']} cohort {row['cohort']:>4} ({row['strategy']}): FedAvg "
          f"{row['fedavg_median_s'] * 1e3:8.1f} ms/round, DP {row['dp_median_s'] * 1e3:8.1f} "
          f"ms/round, overhead {row['overhead_median_of_ratios'] * 100:+.1f}% (median of pairs), "
          f"{row['overhead_ratio_of_medians'] * 100:+.1f}% (ratio of medians); aggregation alone: "
          f"mean {agg['mean'] * 1e3:.1f} ms, DP {agg['dp'] * 1e3:.1f} ms", flush=True)
  OUT_DIR.mkdir(exist_ok=True)
  backend = jax.default_backend()
  result = {
      'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                  'cpus': os.cpu_count(), 'backend': backend,
                  'devices': [str(d) for d in jax.devices()]},
      'versions': {'python': platform.python_version(), 'jax': jax.__version__,
                   'numpy': np.__version__},
      'rows': rows,
  }
  path = OUT_DIR / f'dp-overhead-{backend}{args.tag}.json'
  path.write_text(json.dumps(result, indent=2) + '\n')
  print('| model | cohort | strategy | FedAvg ms/round | DP ms/round | overhead (median of pairs) '
        '| mean aggregation ms | DP aggregation ms | DP added / FedAvg round |')
  print('|---|---|---|---|---|---|---|---|---|')
  for row in rows:
    agg = row['aggregation_s']
    added = (agg['dp'] - agg['mean']) / row['fedavg_median_s']
    print(f"| {row['model']} | {row['cohort']} | {row['strategy']} | "
          f"{row['fedavg_median_s'] * 1e3:.1f} | {row['dp_median_s'] * 1e3:.1f} | "
          f"{row['overhead_median_of_ratios'] * 100:+.1f}% | {agg['mean'] * 1e3:.2f} | "
          f"{agg['dp'] * 1e3:.2f} | {added * 100:+.2f}% |")
  print(f'wrote {path}')


if __name__ == '__main__':
  main()
