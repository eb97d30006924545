"""TensorFlow Federated 0.87 on the shared FedAvg workload.

Native form: one `tf.data.Dataset.from_tensor_slices((x, y)).batch(16)` per
client, built once.  Algorithm: `tff.learning.algorithms.build_weighted_fed_avg`
(client weighting NUM_EXAMPLES, the default) over a Keras model wrapped by
`tff.learning.models.from_keras_model`, client `build_sgdm(0.1)` and server
`build_sgdm(1.0)` (no momentum), in TFF's default execution context (the C++
runtime in a local `worker_binary` process that TFF starts on import).

TFF's `worker_binary` survives the Python process (TFF only stops it in a
__del__ that does not run at exit) and inherits stdout/stderr: this script ends
the worker processes it started, by pid, before exiting.
"""

import contextlib
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workload as W  # noqa: E402

TIMER = (
  'one call of learning_process.next(state, client_datasets) (a list '
  "of the 10 pre-built batched tf.data.Datasets). Includes TFF's "
  'serialization of the state and of the 10 datasets into the C++ '
  'executor (local worker_binary over gRPC on localhost), the federated '
  "broadcast, each client's 4 Keras SGD steps in a dataset reduce, the "
  'example-weighted mean of the deltas, the server sgdm(1.0) step, the '
  'built-in loss/num_examples metrics, and materializing the new state '
  'back in Python (next() returns concrete NumPy values, so the weights '
  'are ready). Excludes building the datasets and the process.'
)


def keras_model(name):
  import tensorflow as tf

  L = tf.keras.layers
  if name == 'linear':
    layers = [L.Flatten(), L.Dense(W.NUM_CLASSES)]
  else:
    layers = [
      L.Conv2D(32, 3, padding='valid', activation='relu'),
      L.Conv2D(64, 3, padding='valid', activation='relu'),
      L.MaxPool2D(2),
      L.Flatten(),
      L.Dense(128, activation='relu'),
      L.Dense(W.NUM_CLASSES),
    ]
  return tf.keras.Sequential([tf.keras.Input(shape=W.IMAGE_SHAPE)] + layers)


def _worker_children():
  """pids of worker_binary processes whose parent is this process."""
  me, pids = os.getpid(), []
  for d in os.listdir('/proc'):
    if not d.isdigit():
      continue
    try:
      with open(f'/proc/{d}/stat') as f:
        stat = f.read()
      comm = stat[stat.index('(') + 1 : stat.rindex(')')]
      ppid = int(stat[stat.rindex(')') + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
      continue
    if ppid == me and comm.startswith('worker_binary'):
      pids.append(int(d))
  return pids


def _end_workers():
  pids = _worker_children()
  for pid in pids:
    with contextlib.suppress(ProcessLookupError):
      os.kill(pid, signal.SIGINT)
  deadline = time.time() + 5
  for pid in pids:
    while time.time() < deadline:
      try:
        done, _ = os.waitpid(pid, os.WNOHANG)
      except ChildProcessError:
        break
      if done:
        break
      time.sleep(0.05)
    else:
      with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
  return pids


def main():
  args = W.parse_args('tff')
  import importlib.metadata as md

  import tensorflow as tf
  import tensorflow_federated as tff

  input_spec = (
    tf.TensorSpec([None] + list(W.IMAGE_SHAPE), tf.float32),
    tf.TensorSpec([None], tf.int32),
  )

  def model_fn():
    return tff.learning.models.from_keras_model(
      keras_model(args.model),
      input_spec=input_spec,
      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )

  client_data = [
    tf.data.Dataset.from_tensor_slices((x, y)).batch(W.BATCH_SIZE) for x, y in W.load_clients()
  ]
  process = tff.learning.algorithms.build_weighted_fed_avg(
    model_fn,
    client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=W.CLIENT_LR),
    server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=W.SERVER_LR),
  )
  state = process.initialize()

  x_all, y_all = W.load_all()
  eval_model = keras_model(args.model)

  def evaluate(state):
    process.get_model_weights(state).assign_weights_to(eval_model)
    return W.numpy_eval(lambda xb: eval_model(xb, training=False).numpy(), x_all, y_all)

  init_loss, _ = evaluate(state)
  times = []
  for _ in range(args.warmup + args.rounds):
    t0 = time.perf_counter()
    out = process.next(state, client_data)
    state = out.state
    times.append(time.perf_counter() - t0)
  loss, acc = evaluate(state)
  W.check_and_report(
    peer='tff',
    model=args.model,
    round_times=times,
    warmup=args.warmup,
    timer_includes=TIMER,
    versions={
      'tensorflow-federated': md.version('tensorflow-federated'),
      'tensorflow': tf.__version__,
      'jax': md.version('jax'),
    },
    final_loss=loss,
    final_accuracy=acc,
    initial_loss=init_loss,
    extra={'tff_train_loss_last_round': float(out.metrics['client_work']['train']['loss'])},
  )


if __name__ == '__main__':
  # The JSON line goes to the real stdout; everything else (TF logs, the
  # worker_binary's inherited output) to stderr.
  real_stdout = os.dup(1)
  os.dup2(2, 1)
  sys.stdout = os.fdopen(real_stdout, 'w')
  try:
    main()
  finally:
    ended = _end_workers()
    print(f'peer_tff: ended worker_binary pids {ended}', file=sys.stderr)
