"""fedjax_like on the shared peer workload; prints the same ONE JSON line as the peer scripts.

Run with the project's venv: .venv/bin/python benchmarks/peers/peer_ours.py --model cnn
The timer covers `process.next(state, packed_cohort)` until the new server weights are ready:
host-side validation of the packed cohort, its transfer to the device, the whole compiled round
(10 clients' local SGD, the weighted mean, the server step) and blocking on the result. Packing the
clients' batches into arrays happens once before the timed rounds, as the peers load their data
into their native form first.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import workload  # noqa: E402

import fedjax_like as fl  # noqa: E402
from fedjax_like.core import cohort  # noqa: E402
from fedjax_like.data import Dataset, pack_cohort  # noqa: E402

TIMER = (
  'process.next(state, packed cohort) to block_until_ready(new state): host validation of the '
  'packed arrays, host->device transfer, the compiled round (local SGD of all clients, weighted '
  'mean, server SGD); packing the batches into arrays is done once before timing'
)


class CNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(32, (3, 3), padding='VALID')(x))
    x = nn.relu(nn.Conv(64, (3, 3), padding='VALID')(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(128)(x))
    return nn.Dense(workload.NUM_CLASSES)(x)


class Linear(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(workload.NUM_CLASSES)(x.reshape(x.shape[0], -1))


def main():
  args = workload.parse_args('fedjax_like')
  module = CNN() if args.model == 'cnn' else Linear()
  spec = (
    jax.ShapeDtypeStruct(workload.IMAGE_SHAPE, jnp.float32),
    jax.ShapeDtypeStruct((), jnp.int32),
  )
  model = fl.models.from_linen(module, spec)
  clients = workload.load_clients()
  packed = pack_cohort(
    [
      Dataset((x, y), client_id=str(i)).batch(workload.BATCH_SIZE)
      for i, (x, y) in enumerate(clients)
    ]
  )
  process = fl.learning.algorithms.build_weighted_fed_avg(
    model,
    fl.learning.optimizers.build_sgdm(workload.CLIENT_LR),
    server_optimizer_fn=fl.learning.optimizers.build_sgdm(workload.SERVER_LR),
  )
  state = process.initialize()
  x_all, y_all = workload.load_all()

  def evaluate(weights):
    logits = jax.jit(lambda w, x: model.apply_fn(w, x, None, False))
    return workload.numpy_eval(lambda xb: logits(weights, xb), x_all, y_all)

  initial_loss, _ = evaluate(state.global_model_weights)
  times = []
  for _ in range(args.warmup + args.rounds):
    start = time.perf_counter()
    state, _ = process.next(state, packed)
    jax.block_until_ready(state.global_model_weights)
    times.append(time.perf_counter() - start)
  loss, accuracy = evaluate(state.global_model_weights)
  strategy = fl.Runtime().strategy_for(workload.NUM_CLIENTS)
  workload.check_and_report(
    peer='fedjax_like',
    model=args.model,
    round_times=times,
    warmup=args.warmup,
    timer_includes=TIMER,
    versions={
      'fedjax_like': fl.__version__,
      'jax': jax.__version__,
      'flax': __import__('flax').__version__,
    },
    final_loss=loss,
    final_accuracy=accuracy,
    initial_loss=initial_loss,
    extra={'strategy': strategy, 'backend': jax.default_backend(), 'devices': jax.device_count()},
  )


if __name__ == '__main__':
  main()
