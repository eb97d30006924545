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

Measured, each part in a fresh process (so peak memory is that part's alone):

* load: ``load_and_parse_sql_client_data`` of the split (ids and sizes only), seconds and RSS;
* random client reads, one client at a time (``dataset_for_client``) and a cohort of 1,000 at
  once (``datasets_for_clients``: one query, one vectorized decode), clients/s;
* packing a cohort of 1,000 (read, map to the CNN's input, shuffle, batch 20) as ``next`` packs a
  list of client datasets (step-group blocks of the default runtime) and as
  ``simulation.pack_round`` does (every client padded to the longest), examples/s and MB, with the
  per-example decoder as the baseline;
* the EMNIST CNN's FedAvg round on clients of the same file (default runtime), examples/s;
* peak RSS above the loaded baseline while sampling ``--memory-cohorts`` cohorts (of 100, then of
  1,000 clients) and packing each, both ways: memory that follows the cohort, not the population.

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


def _setup(path: str, seed: int):
  import fedjax_like as fl
  from fedjax_like.data.sources import sql_client_data
  from fedjax_like.data.sources.tf_example import FixedLenFeature
  from fedjax_like.simulation import ClientPreprocess

  spec = {'label': FixedLenFeature((), 'int64'), 'pixels': FixedLenFeature((28, 28), 'float32')}
  base = _rss_mb()
  start = time.perf_counter()
  train = sql_client_data.load_and_parse_sql_client_data(path, spec, 'train')
  load = {'load_s': time.perf_counter() - start, 'rss_after_imports_mb': base,
          'rss_after_load_mb': _rss_mb(), 'clients': len(train)}
  model = fl.models.zoo.emnist_cnn(62)
  preprocess = ClientPreprocess.for_model(model, batch_size=20, num_epochs=1, seed=seed)
  return fl, train, model, preprocess, load


def _pack_groups(fl, train, preprocess, client_ids, round_num):
  """A cohort packed as ``process.next`` packs a list of client datasets: step-group blocks of
  the default runtime's layout, each padded only to its own budget."""
  from fedjax_like.core.engine import default_runtime
  from fedjax_like.data.packing import pack_groups

  datasets = [preprocess(d, round_num) for d in train.datasets_for_clients(client_ids)]
  steps = np.array([d.num_batches for d in datasets], dtype=np.int64)
  return pack_groups(datasets, default_runtime().layout(steps).blocks)


def _nbytes(parts) -> int:
  import jax.tree_util as jtu

  return sum(leaf.nbytes for part in parts for leaf in jtu.tree_leaves((part.batches, part.mask)))


def measure_speed(path: str, cohort: int, cnn_clients: int, seed: int) -> dict:
  """Load, reads and packing speed, and the CNN round, in this process (run it fresh)."""
  from fedjax_like.data.sources import tf_example, tf_example_batch
  from fedjax_like.simulation import pack_round

  fl, train, model, preprocess, result = _setup(path, seed)
  rng = np.random.default_rng(seed)
  ids = train.client_ids
  sample = lambda k: [ids[i] for i in rng.choice(len(ids), k, replace=False)]  # noqa: E731

  def clients_per_s(read, clients):
    start = time.perf_counter()
    read(clients)
    return len(clients) / (time.perf_counter() - start)

  one_by_one = lambda cs: [train.dataset_for_client(c) for c in cs]  # noqa: E731
  first = sample(2000)
  result['read_one_by_one_clients_per_s'] = clients_per_s(one_by_one, first)
  # The same clients again: their pages are now in the OS cache, so this is the CPU's part.
  result['read_one_by_one_warm_clients_per_s'] = clients_per_s(one_by_one, first)
  cohorts = [sample(cohort) for _ in range(5)]
  rates = [clients_per_s(train.datasets_for_clients, c) for c in cohorts]
  result['read_cohort_clients_per_s'] = float(np.median(rates))
  warm = [clients_per_s(train.datasets_for_clients, c) for c in cohorts]
  result['read_cohort_warm_clients_per_s'] = float(np.median(warm))
  reference = tf_example_batch.parse_examples
  tf_example_batch.parse_examples = tf_example.parse_examples  # The per-example decoder.
  try:
    result['read_cohort_per_example_decoder_clients_per_s'] = clients_per_s(
        train.datasets_for_clients, sample(cohort))
  finally:
    tf_example_batch.parse_examples = reference

  def timed(pack, r):
    client_ids = sample(cohort)
    start = time.perf_counter()
    packed = pack(client_ids, r)
    seconds = time.perf_counter() - start
    parts = packed if isinstance(packed, tuple) else (packed,)
    examples = sum(int(p.num_examples.sum()) for p in parts)
    return seconds, examples, _nbytes(parts)

  groups = lambda cs, r: _pack_groups(fl, train, preprocess, cs, r)  # noqa: E731
  padded = lambda cs, r: pack_round(train, cs, r, preprocess)  # noqa: E731
  for name, pack in (('groups', groups), ('pack_round', padded)):
    runs = [timed(pack, r) for r in range(3)]
    seconds, examples, nbytes = (float(np.median(v)) for v in zip(*runs, strict=True))
    result[f'pack_{name}_s'] = seconds
    result[f'pack_{name}_examples'] = examples
    result[f'pack_{name}_examples_per_s'] = examples / seconds
    result[f'pack_{name}_mb'] = nbytes / 2**20
  tf_example_batch.parse_examples = tf_example.parse_examples
  try:
    seconds, examples, _ = timed(groups, 9)
    result['pack_groups_per_example_decoder_examples_per_s'] = examples / seconds
  finally:
    tf_example_batch.parse_examples = reference

  if cnn_clients:
    import jax

    trainer = fl.learning.algorithms.build_weighted_fed_avg(
        model, client_optimizer_fn=fl.learning.optimizers.build_sgdm(0.1))
    state = trainer.initialize()
    packed = pack_round(train, sample(cnn_clients), 0, preprocess)
    state, _ = trainer.next(state, packed)  # Compiles.
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


def measure_memory(path: str, cohort: int, num_cohorts: int, packer: str, seed: int) -> dict:
  """Peak RSS above the loaded baseline while packing ``num_cohorts`` sampled cohorts."""
  from fedjax_like.data.sampling import UniformSampler
  from fedjax_like.simulation import pack_round

  fl, train, _, preprocess, result = _setup(path, seed)
  sampler = UniformSampler(train.client_ids, cohort, seed=seed)
  base = _rss_mb()
  _reset_peak()
  largest = 0
  for r in range(1, num_cohorts + 1):
    ids = sampler.sample(r)
    if packer == 'groups':
      parts = _pack_groups(fl, train, preprocess, ids, r)
    else:
      parts = (pack_round(train, ids, r, preprocess),)
    largest = max(largest, _nbytes(parts))
    del parts
  result.update(peak_above_base_mb=_rss_mb('VmHWM') - base, largest_packed_mb=largest / 2**20)
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
  parser.add_argument('--memory-cohorts', type=int, default=100)
  parser.add_argument('--measure', nargs='+', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.measure:
    kind, path = args.measure[:2]
    if kind == 'speed':
      result = measure_speed(path, args.cohort, args.cnn_clients, args.seed)
    else:
      size, packer = int(args.measure[2]), args.measure[3]
      result = measure_memory(path, size, args.memory_cohorts, packer, args.seed)
    print(json.dumps(result))
    return
  os.makedirs(args.dir, exist_ok=True)
  path = os.path.join(args.dir, f'synthetic_{args.clients}_{args.mean_rows:g}.sqlite')
  free_before = shutil.disk_usage(args.dir).free / 1e9
  written = None
  if not os.path.exists(path):
    print(f'writing {path} ({free_before:.0f} GB free there)', flush=True)
    written = write(path, args.clients, args.mean_rows, args.seed)
    print(json.dumps(written), flush=True)
  def run(*measure):
    command = [sys.executable, '-m', 'benchmarks.data_scale', '--cohort', str(args.cohort),
               '--cnn-clients', str(args.cnn_clients), '--seed', str(args.seed),
               '--memory-cohorts', str(args.memory_cohorts), '--measure', *measure]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          cwd=pathlib.Path(__file__).resolve().parent.parent)
    if done.returncode:
      sys.exit(f'measurement {measure} failed:\n{done.stderr[-4000:]}')
    return json.loads(done.stdout.strip().splitlines()[-1])

  result = run('speed', path)
  print(json.dumps(result), flush=True)
  memory = {}
  for size in (args.cohort // 10, args.cohort):
    for packer in ('groups', 'pack_round'):
      memory[f'{packer}_{size}'] = run('memory', path, str(size), packer)
      print(packer, size, json.dumps(memory[f'{packer}_{size}']), flush=True)
  con = sqlite3.connect(path)
  rows = con.execute('SELECT COUNT(*) FROM examples').fetchone()[0]
  con.close()
  file_gb = os.path.getsize(path) / 1e9
  c = f'{args.cohort:,}'
  table = [
      ('population', f"{result['clients']:,} clients, {rows:,} rows, {file_gb:.1f} GB file"),
      ('load (ids and sizes only)', f"{result['load_s']:.2f} s, "
       f"+{result['rss_after_load_mb'] - result['rss_after_imports_mb']:.0f} MB RSS"),
      ('random reads, one client at a time',
       f"{result['read_one_by_one_clients_per_s']:,.0f} clients/s (the same clients again, "
       f"cached: {result['read_one_by_one_warm_clients_per_s']:,.0f})"),
      (f'random reads, cohorts of {c} at once',
       f"{result['read_cohort_clients_per_s']:,.0f} clients/s (cached: "
       f"{result['read_cohort_warm_clients_per_s']:,.0f}; per-example decoder: "
       f"{result['read_cohort_per_example_decoder_clients_per_s']:,.0f})"),
      (f'pack a cohort of {c} as `next` does (step-group blocks, batch 20)',
       f"{result['pack_groups_s']:.2f} s, {result['pack_groups_examples']:,.0f} examples, "
       f"{result['pack_groups_mb']:.0f} MB: {result['pack_groups_examples_per_s']:,.0f} "
       f"examples/s (per-example decoder: "
       f"{result['pack_groups_per_example_decoder_examples_per_s']:,.0f})"),
      (f'pack a cohort of {c} with `simulation.pack_round` (padded to the longest)',
       f"{result['pack_pack_round_s']:.2f} s, {result['pack_pack_round_mb']:.0f} MB: "
       f"{result['pack_pack_round_examples_per_s']:,.0f} examples/s"),
  ]
  if 'cnn_round_examples_per_s' in result:
    table.append((f"EMNIST CNN FedAvg round ({result['jax_backend']}, {args.cnn_clients} clients)",
                  f"{result['cnn_round_examples_per_s']:,.0f} examples/s"))
  for key, m in memory.items():
    packer, size = key.rsplit('_', 1)
    table.append((f'peak RSS above the loaded baseline, {args.memory_cohorts} cohorts of '
                  f'{int(size):,} ({packer})',
                  f"{m['peak_above_base_mb']:.0f} MB (largest packed cohort "
                  f"{m['largest_packed_mb']:.0f} MB)"))
  print('\n| what | measured |\n|---|---|')
  for what, value in table:
    print(f'| {what} | {value} |')
  OUT.parent.mkdir(exist_ok=True)
  meta = {'python': platform.python_version(), 'numpy': np.__version__,
          'sqlite': sqlite3.sqlite_version, 'machine': platform.processor() or platform.machine(),
          'cpus': os.cpu_count(), 'args': vars(args), 'written': written,
          'disk_free_gb_before': free_before, 'file_gb': file_gb, 'rows': rows}
  OUT.write_text(json.dumps({'meta': meta, 'result': result, 'memory': memory}, indent=1))
  print(f'\nwrote {OUT}')
  if args.delete:
    os.remove(path)
    print(f'removed {path}')


if __name__ == '__main__':
  main()
