"""Host memory of a round over 1,000 and 10,000 EMNIST-like clients: in memory vs streamed.

    python -m benchmarks.stream                        # cohorts 1,000 and 10,000 (streamed)
    python -m benchmarks.stream --cohorts 1000 --modes memory stream

Each cell runs ONE FedAvg round through the training loop (``run_training_process``: the cohort is
a ``RoundCohort``, batched on demand) in a fresh process, and reports the process's peak resident
memory (``ru_maxrss``), the round's wall time and the packed size the cohort would take in memory.
Clients are EMNIST-like (sizes as ``benchmarks/cohort.py``: log-normal, mean about 226 examples,
28x28 float32 pixels, batch 20); their pixels are generated from the client id when the client is
read, so the population itself takes no memory, as a file-backed ``ClientData`` would. The model
is the seed's logistic regression (the memory in question is the data's, and the round stays
short on a CPU). ``memory`` packs the cohort's step-group blocks in host memory (``stream=False``);
``stream`` feeds it chunk by chunk (``stream=True``, chunks of at most 64 MiB). Writes
``benchmarks/results/stream-<backend>.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import resource
import subprocess
import sys
import time

import numpy as np

OUT_DIR = pathlib.Path(__file__).resolve().parent / 'results'
BATCH = 20


def _sizes(num_clients: int, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  sigma = 0.6
  sizes = rng.lognormal(np.log(226) - sigma**2 / 2, sigma, num_clients)
  return np.clip(np.round(sizes), 10, 1200).astype(int)


def _cell(num_clients: int, mode: str) -> dict:
  """One round in this process; returns the measurements."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  import fedjax_like as fl
  from fedjax_like.data import ClientData
  from fedjax_like.data.sampling import FixedSampler
  from fedjax_like.simulation.cohorts import ClientPreprocess

  sizes = _sizes(num_clients)
  ids = [f'c{i}' for i in range(num_clients)]
  size_of = dict(zip(ids, sizes.tolist()))

  def load(client_id):
    n = size_of[client_id]
    rng = np.random.default_rng(int(client_id[1:]))
    return {'pixels': rng.random((n, 28, 28), dtype=np.float32),
            'label': rng.integers(0, 10, n).astype(np.int32)}

  data = ClientData.from_loader(ids, load, sizes=size_of)
  spec = (jax.ShapeDtypeStruct((28, 28), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))

  class Logistic(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(10)(x.reshape(x.shape[0], -1))

  model = fl.models.from_linen(Logistic(), spec)
  runtime = fl.Runtime('sequential', stream=mode == 'stream')
  process = fl.learning.algorithms.build_weighted_fed_avg(
      model, fl.learning.optimizers.build_sgdm(0.1), runtime=runtime)
  preprocess = ClientPreprocess.for_model(model, batch_size=BATCH, seed=0)
  baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  start = time.perf_counter()
  result = fl.simulation.run_training_process(
      process, data, FixedSampler(ids), 1, client_preprocess=preprocess, progress='none')
  jax.block_until_ready(result.state)
  seconds = time.perf_counter() - start
  steps = -(-sizes // BATCH)
  return {
      'clients': num_clients,
      'mode': mode,
      'examples': int(sizes.sum()),
      'peak_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      'rss_before_round_bytes': baseline,
      'round_s': seconds,
      'data_bytes': int(sizes.sum()) * 28 * 28 * 4,
      'padded_steps': int(steps.sum()),
      'accuracy': float(result.history[-1]['client_work/train/accuracy']),
  }


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--cohorts', type=int, nargs='+', default=[1000, 10000])
  parser.add_argument('--modes', nargs='+', default=None, choices=['memory', 'stream'])
  parser.add_argument('--cell', nargs=2, help=argparse.SUPPRESS)  # internal: run one cell
  args = parser.parse_args(argv)
  if args.cell:
    print(json.dumps(_cell(int(args.cell[0]), args.cell[1])))
    return
  rows = []
  for n in args.cohorts:
    # In memory, 10,000 such clients need about 7 GB of pixels alone: only the streamed run.
    for mode in args.modes or (['memory', 'stream'] if n <= 1000 else ['stream']):
      out = subprocess.run([sys.executable, '-m', 'benchmarks.stream', '--cell', str(n), mode],
                           capture_output=True, text=True, check=True)
      rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
      print(rows[-1], flush=True)
  import jax

  backend = jax.default_backend()
  OUT_DIR.mkdir(exist_ok=True)
  meta = {'machine': platform.platform(), 'python': platform.python_version(),
          'jax': jax.__version__, 'backend': backend}
  (OUT_DIR / f'stream-{backend}.json').write_text(json.dumps({'meta': meta, 'rows': rows},
                                                             indent=1))
  mib = 2**20
  print('\n| clients | mode | examples | pixels in memory (MiB) | peak RSS (MiB) | RSS before the '
        'round (MiB) | round s |')
  print('|---|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['clients']:,} | {r['mode']} | {r['examples']:,} | {r['data_bytes'] / mib:,.0f} | "
          f"{r['peak_rss_bytes'] / mib:,.0f} | {r['rss_before_round_bytes'] / mib:,.0f} | "
          f"{r['round_s']:.1f} |")


if __name__ == '__main__':
  main()
