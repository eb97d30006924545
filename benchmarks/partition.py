"""Partitioner speed: one million examples into ten thousand clients.

    python -m benchmarks.partition                       # 1,000,000 examples, 10,000 clients
    python -m benchmarks.partition --examples 100000 --clients 1000 --classes 62

Each partitioner of ``fedjax_like.data.partition`` is timed on synthetic labels (uniform over
``--classes`` classes; natural ids uniform over ``--clients`` users), best of ``--repeats`` runs,
wall clock, including the within-client shuffle. Also timed: the per-client label histogram and
building a ClientData from the partition and reading every client once. The target is under 2 s
per partitioner at the default size. Prints a markdown table and writes
``benchmarks/results/partition.json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time
import warnings

import numpy as np

from fedjax_like.data import partition as P

OUT = pathlib.Path(__file__).resolve().parent / 'results' / 'partition.json'


def _best(fn, repeats: int) -> tuple[float, object]:
  best, result = float('inf'), None
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    best = min(best, time.perf_counter() - start)
  return best, result


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--examples', type=int, default=1_000_000)
  parser.add_argument('--clients', type=int, default=10_000)
  parser.add_argument('--classes', type=int, default=10)
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args(argv)
  n, m = args.examples, args.clients
  rng = np.random.default_rng(0)
  table = {
      'label': rng.integers(0, args.classes, n),
      'user': rng.integers(0, m, n).astype(str).astype(object),
  }
  partitioners = {
      'IID': P.IidPartitioner(m),
      'Dirichlet alpha=0.5': P.DirichletPartitioner(m, alpha=0.5, min_partition_size=0),
      'Dirichlet alpha=0.5, balanced': P.DirichletPartitioner(
          m, alpha=0.5, min_partition_size=0, self_balancing=True
      ),
      'Dirichlet alpha=100, min size 10': P.DirichletPartitioner(m, alpha=100.0),
      'pathological k=2': P.PathologicalPartitioner(m, num_classes_per_partition=2),
      'shards 2 per client': P.ShardPartitioner(m, num_shards_per_partition=2),
      'linear size skew': P.LinearPartitioner(min(m, int(np.sqrt(2 * n)) - 1)),
      'square size skew': P.SquarePartitioner(min(m, int(np.cbrt(3 * n)) - 1)),
      'exponential size skew': P.ExponentialPartitioner(min(m, 12)),
      'natural id (string user ids)': P.NaturalIdPartitioner('user'),
  }
  rows = []
  for name, partitioner in partitioners.items():
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      seconds, part = _best(lambda p=partitioner: p(table), args.repeats)
    rows.append({'what': name, 'clients': len(part), 'seconds': seconds})
    print(f'{name}: {seconds:.3f} s', flush=True)
  part = P.DirichletPartitioner(m, alpha=0.5, min_partition_size=0)(table)
  seconds, _ = _best(lambda: P.label_histogram(part, table['label']), args.repeats)
  rows.append({'what': 'label_histogram', 'clients': len(part), 'seconds': seconds})
  arrays = {'x': np.zeros((n, 4), np.float32), 'label': table['label']}

  def read_all():
    data = part.client_data(arrays)
    return sum(len(data.dataset_for_client(c)) for c in data.client_ids)

  seconds, total = _best(read_all, 1)
  assert total == n
  rows.append({'what': 'client_data + read every client', 'clients': len(part), 'seconds': seconds})
  print()
  print(f'{n:,} examples, {args.classes} classes, {m:,} clients (size skews: fewer, as noted)')
  print()
  print('| partitioner | clients | seconds |')
  print('|---|---|---|')
  for row in rows:
    print(f"| {row['what']} | {row['clients']:,} | {row['seconds']:.3f} |")
  OUT.parent.mkdir(exist_ok=True)
  meta = {
      'examples': n, 'clients': m, 'classes': args.classes, 'repeats': args.repeats,
      'python': platform.python_version(), 'numpy': np.__version__,
      'machine': platform.processor() or platform.machine(),
  }
  OUT.write_text(json.dumps({'meta': meta, 'rows': rows}, indent=1))
  print(f'\nwrote {OUT}')


if __name__ == '__main__':
  main()
