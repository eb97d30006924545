"""Federated data at StackOverflow scale: a synthetic population in TFF's SQLite schema.

    python -m benchmarks.data_scale                         # write (if absent), measure, keep
    python -m benchmarks.data_scale --dir /big/disk --clients 300000 --mean-rows 10
    python -m benchmarks.data_scale --delete                # remove the file at the end

The file has TFF's ``SqlClientData`` layout (tables ``examples`` and ``client_metadata``, an index
on ``(split_name, client_id)``, each client's rows together, as TFF wrote its files) with
``--clients`` clients in split ``train`` whose sizes are log-normal (a long tail, mean
``--mean-rows``; StackOverflow has 342,477 train clients). Each row is a serialized
``tf.train.Example`` in federated EMNIST's form (``pixels``: 784 floats, ``label``: int64), so a
cohort packs for the EMNIST CNN and can be compared with the round that consumes it. The file is
written under ``--dir`` (default: the system temp dir), never in the repository.

Measured, in a fresh process (so peak memory is the reader's alone):

* load: ``load_and_parse_sql_client_data`` of the split (ids and sizes only), seconds and RSS;
* random client reads, one client at a time (``dataset_for_client``) and a cohort of 1,000 at
  once (``datasets_for_clients``: one query, one vectorized decode), clients/s;
* packing a cohort of 1,000 as the training loop does (``simulation.pack_round``: read, map to the
  CNN's input, shuffle, batch 20, pack), examples/s, with the per-example decoder as the baseline;
* the EMNIST CNN's FedAvg round on clients of the same file (CPU default runtime), examples/s;
* peak RSS above the loaded baseline while sampling 100 cohorts (of 100, then of 1,000 clients)
  and packing each: memory that follows the cohort, not the population.

Prints a markdown table and writes ``benchmarks/results/data_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

import numpy as np

OUT = pathlib.Path(__file__).resolve().parent / 'results' / 'data_scale.json'
CHUNK = 20_000


def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    low, n = n & 0x7F, n >> 7
    out.append(low | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _len_delim(field: int, payload: bytes) -> bytes:
  return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _template() -> tuple[bytes, int, int]:
  """An EMNIST Example with label 0 and zero pixels, the label byte's offset and the pixels'."""
  label = _len_delim(1, b'label') + _len_delim(2, _len_delim(3, _len_delim(1, b'\0')))
  pixels = _len_delim(1, b'pixels') + _len_delim(2, _len_delim(2, _len_delim(1, bytes(3136))))
  record = _len_delim(1, _len_delim(1, label) + _len_delim(1, pixels))
  return record, record.index(b'\0', record.index(b'label')), len(record) - 3136


def write(path: str, num_clients: int, mean_rows: float, seed: int) -> dict:
  """Writes the synthetic population; returns what it wrote."""
  rng = np.random.default_rng(seed)
  sizes = rng.lognormal(0.0, 1.0, num_clients)
  sizes = np.maximum(1, np.round(sizes * mean_rows / sizes.mean())).astype(np.int64)
  ids = [f'{i:07d}' for i in range(num_clients)]
  template, label_at, pixels_at = _template()
  width = len(template)
  start = time.perf_counter()
  tmp = path + '.partial'
  if os.path.exists(tmp):
    os.remove(tmp)
  con = sqlite3.connect(tmp)
  con.execute('PRAGMA journal_mode=OFF')
  con.execute('PRAGMA synchronous=OFF')
  con.execute('CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL, '
              'serialized_example_proto BLOB NOT NULL)')
  con.execute('CREATE TABLE client_metadata (client_id TEXT NOT NULL, split_name TEXT NOT NULL, '
              'num_examples INTEGER NOT NULL)')
  owners = np.repeat(np.arange(num_clients), sizes)
  total = len(owners)
  for begin in range(0, total, CHUNK):
    rows = owners[begin : begin + CHUNK]
    records = np.empty((len(rows), width), dtype=np.uint8)
    records[:] = np.frombuffer(template, dtype=np.uint8)
    records[:, label_at] = rng.integers(0, 62, len(rows), dtype=np.uint8)
    pixels = rng.integers(0, 256, (len(rows), 784), dtype=np.uint8).astype(np.float32) / 255
    records[:, pixels_at:] = pixels.view(np.uint8)
    con.executemany(
        'INSERT INTO examples VALUES (?, ?, ?)',
        (('train', ids[o], records[i].tobytes()) for i, o in enumerate(rows.tolist())),
    )
    con.commit()
  con.executemany('INSERT INTO client_metadata VALUES (?, ?, ?)',
                  ((c, 'train', int(n)) for c, n in zip(ids, sizes.tolist(), strict=True)))
  con.execute('CREATE INDEX idx_client_id_split ON examples (split_name, client_id)')
  con.execute('CREATE INDEX idx_metadata_client_id ON client_metadata (client_id)')
  con.commit()
  con.close()
  os.replace(tmp, path)
  return {'clients': num_clients, 'rows': int(total), 'row_bytes': width,
          'file_gb': os.path.getsize(path) / 1e9, 'write_s': time.perf_counter() - start}


def _rss_mb(field: str = 'VmRSS') -> float:
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith(field + ':'):
        return int(line.split()[1]) / 1024
  return float('nan')


def _reset_peak() -> None:
  with open('/proc/self/clear_refs', 'w') as f:  # Linux: "5" resets the peak RSS (VmHWM).
    f.write('5')


def measure(path: str, cohort: int, cnn_clients: int, seed: int) -> dict:
  """The measurements, in this process (run it fresh)."""
  import fedjax_like as fl
  from fedjax_like.data.sampling import UniformSampler
  from fedjax_like.data.sources import sql_client_data, tf_example, tf_example_batch
  from fedjax_like.data.sources.tf_example import FixedLenFeature
  from fedjax_like.simulation import ClientPreprocess, pack_round

  spec = {'label': FixedLenFeature((), 'int64'), 'pixels': FixedLenFeature((28, 28), 'float32')}
  result = {'rss_after_imports_mb': _rss_mb()}
  start = time.perf_counter()
  train = sql_client_data.load_and_parse_sql_client_data(path, spec, 'train')
  result['load_s'] = time.perf_counter() - start
  result['clients'] = len(train)
  result['rss_after_load_mb'] = _rss_mb()
  rng = np.random.default_rng(seed)
  ids = train.client_ids

  def rate(fn, clients):
    start = time.perf_counter()
    n = fn(clients)
    return len(clients) / (time.perf_counter() - start), n

  one_by_one = lambda cs: sum(len(train.dataset_for_client(c)) for c in cs)  # noqa: E731
  at_once = lambda cs: sum(len(d) for d in train.datasets_for_clients(cs))  # noqa: E731
  sample = lambda k: [ids[i] for i in rng.choice(len(ids), k, replace=False)]  # noqa: E731
  result['read_one_by_one_clients_per_s'], _ = rate(one_by_one, sample(2000))
  rates = [rate(at_once, sample(cohort)) for _ in range(5)]
  result['read_cohort_clients_per_s'] = float(np.median([r for r, _ in rates]))
  reference = tf_example_batch.parse_examples
  tf_example_batch.parse_examples = tf_example.parse_examples  # The per-example decoder.
  try:
    result['read_cohort_per_example_decoder_clients_per_s'], _ = rate(at_once, sample(cohort))
  finally:
    tf_example_batch.parse_examples = reference

  model = fl.models.zoo.emnist_cnn(62)
  preprocess = ClientPreprocess.for_model(model, batch_size=20, num_epochs=1, seed=seed)
  packs = []
  for r in range(3):
    start = time.perf_counter()
    packed = pack_round(train, sample(cohort), r, preprocess)
    packs.append((int(packed.num_examples.sum()), time.perf_counter() - start))
  result['pack_examples_per_s'] = float(np.median([n / s for n, s in packs]))
  result['pack_cohort_s'] = float(np.median([s for _, s in packs]))
  result['pack_cohort_examples'] = int(np.median([n for n, _ in packs]))
  tf_example_batch.parse_examples = tf_example.parse_examples
  try:
    start = time.perf_counter()
    packed = pack_round(train, sample(cohort), 9, preprocess)
    result['pack_per_example_decoder_examples_per_s'] = (
        packed.num_examples.sum() / (time.perf_counter() - start))
  finally:
    tf_example_batch.parse_examples = reference

  # Peak memory while sampling cohorts: above the loaded baseline, for two cohort sizes.
  for size in (cohort // 10, cohort):
    sampler = UniformSampler(ids, size, seed=seed)
    base = _rss_mb()
    _reset_peak()
    for r in range(1, 101):
      packed = pack_round(train, sampler.sample(r), r, preprocess)
      del packed
    result[f'peak_rss_above_base_mb_cohort_{size}'] = _rss_mb('VmHWM') - base

  if cnn_clients:
    import jax

    trainer = fl.learning.algorithms.build_weighted_fed_avg(
        model, client_optimizer_fn=fl.learning.optimizers.build_sgdm(0.1))
    state = trainer.initialize()
    cohort_ids = sample(cnn_clients)
    packed = pack_round(train, cohort_ids, 0, preprocess)
    state, _ = trainer.next(state, packed)  # Compile.
    jax.block_until_ready(state)
    times = []
    for _ in range(2):
      start = time.perf_counter()
      state, _ = trainer.next(state, packed)
      jax.block_until_ready(state)
      times.append(time.perf_counter() - start)
    result['cnn_round_examples'] = int(packed.num_examples.sum())
    result['cnn_round_examples_per_s'] = result['cnn_round_examples'] / min(times)
    result['jax_backend'] = jax.default_backend()
  return result


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--dir', default=os.path.join(tempfile.gettempdir(), 'fedjax_like_scale'))
  parser.add_argument('--clients', type=int, default=300_000)
  parser.add_argument('--mean-rows', type=float, default=10.0)
  parser.add_argument('--cohort', type=int, default=1000)
  parser.add_argument('--cnn-clients', type=int, default=100,
                      help='clients in the CNN round measured (0: skip it)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--delete', action='store_true', help='remove the file afterwards')
  parser.add_argument('--measure-only', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.measure_only:
    print(json.dumps(measure(args.measure_only, args.cohort, args.cnn_clients, args.seed)))
    return
  os.makedirs(args.dir, exist_ok=True)
  path = os.path.join(args.dir, f'synthetic_{args.clients}_{args.mean_rows:g}.sqlite')
  free_before = shutil.disk_usage(args.dir).free / 1e9
  written = None
  if not os.path.exists(path):
    print(f'writing {path} ({free_before:.0f} GB free there)', flush=True)
    written = write(path, args.clients, args.mean_rows, args.seed)
    print(json.dumps(written), flush=True)
  command = [sys.executable, '-m', 'benchmarks.data_scale', '--measure-only', path,
             '--cohort', str(args.cohort), '--cnn-clients', str(args.cnn_clients),
             '--seed', str(args.seed)]
  done = subprocess.run(command, capture_output=True, text=True, check=False,
                        cwd=pathlib.Path(__file__).resolve().parent.parent)
  if done.returncode:
    sys.exit(f'measurement failed:\n{done.stderr[-4000:]}')
  result = json.loads(done.stdout.strip().splitlines()[-1])
  con = sqlite3.connect(path)
  rows = con.execute('SELECT COUNT(*) FROM examples').fetchone()[0]
  con.close()
  file_gb = os.path.getsize(path) / 1e9
  table = [
      ('population', f"{result['clients']:,} clients, {rows:,} rows, {file_gb:.1f} GB file"),
      ('load (ids and sizes only)', f"{result['load_s']:.2f} s, "
       f"+{result['rss_after_load_mb'] - result['rss_after_imports_mb']:.0f} MB RSS"),
      ('random reads, one client at a time', f"{result['read_one_by_one_clients_per_s']:,.0f} "
       'clients/s'),
      (f'random reads, cohorts of {args.cohort:,} at once',
       f"{result['read_cohort_clients_per_s']:,.0f} clients/s (per-example decoder: "
       f"{result['read_cohort_per_example_decoder_clients_per_s']:,.0f})"),
      (f'pack a cohort of {args.cohort:,} (pack_round, batch 20)',
       f"{result['pack_cohort_s']:.2f} s for {result['pack_cohort_examples']:,} examples: "
       f"{result['pack_examples_per_s']:,.0f} examples/s (per-example decoder: "
       f"{result['pack_per_example_decoder_examples_per_s']:,.0f})"),
  ]
  if 'cnn_round_examples_per_s' in result:
    table.append((f"EMNIST CNN FedAvg round ({result['jax_backend']}, {args.cnn_clients} clients)",
                  f"{result['cnn_round_examples_per_s']:,.0f} examples/s"))
  for size in (args.cohort // 10, args.cohort):
    table.append((f'peak RSS above baseline, 100 cohorts of {size:,}',
                  f"{result[f'peak_rss_above_base_mb_cohort_{size}']:.0f} MB"))
  print('\n| what | measured |\n|---|---|')
  for what, value in table:
    print(f'| {what} | {value} |')
  OUT.parent.mkdir(exist_ok=True)
  meta = {'python': platform.python_version(), 'numpy': np.__version__,
          'sqlite': sqlite3.sqlite_version, 'machine': platform.processor() or platform.machine(),
          'cpus': os.cpu_count(), 'args': vars(args), 'written': written,
          'disk_free_gb_before': free_before, 'file_gb': file_gb, 'rows': rows}
  OUT.write_text(json.dumps({'meta': meta, 'result': result}, indent=1))
  print(f'\nwrote {OUT}')
  if args.delete:
    os.remove(path)
    print(f'removed {path}')


if __name__ == '__main__':
  main()
