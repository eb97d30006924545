"""FedJAX 0.0.17 on the shared FedAvg workload.

Native form: one `fedjax.ClientDataset({'x', 'y'})` of NumPy arrays per
client, built once.  Algorithm: `fedjax.algorithms.fed_avg.federated_averaging`
(its client loop is `fedjax.for_each_client`, default jit backend) with
`fedjax.optimizers.sgd(0.1)` on the client and `sgd(1.0)` on the server; batches
come from `shuffle_repeat_batch(batch_size=16, num_epochs=1,
skip_shuffle=True)` (stored order, like every peer).  Linear is FedJAX's own
`fedjax.models.emnist.create_logistic_model`; the CNN is FedJAX's EMNIST CNN
(`ConvDropoutModule`) without its two dropout layers, defined here in haiku.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workload as W  # noqa: E402

TIMER = (
  'one call of fed_avg.federated_averaging(...).apply(server_state, '
  'clients) followed by jax.block_until_ready(new_state.params). '
  'Includes, for each of the 10 clients, ClientDataset.'
  'shuffle_repeat_batch (NumPy slicing of 4 batches of 16), '
  "for_each_client's jitted client_init / 4 client_step / client_final "
  '(host->device transfer of each batch), the example-weighted running '
  'sum of deltas and its l2-norm diagnostics, and the server sgd(1.0) '
  'update. Excludes building the ClientDatasets and the per-round PRNG '
  'keys (made before the timer).'
)


def make_model(name):
  import fedjax
  import haiku as hk
  import jax
  import numpy as np

  if name == 'linear':
    return fedjax.models.emnist.create_logistic_model(only_digits=False)

  def forward_pass(batch):
    x = batch['x']
    x = jax.nn.relu(hk.Conv2D(32, (3, 3), padding='VALID')(x))
    x = jax.nn.relu(hk.Conv2D(64, (3, 3), padding='VALID')(x))
    x = hk.MaxPool(window_shape=(1, 2, 2, 1), strides=(1, 2, 2, 1), padding='VALID')(x)
    x = hk.Flatten()(x)
    x = jax.nn.relu(hk.Linear(128)(x))
    return hk.Linear(W.NUM_CLASSES)(x)

  return fedjax.create_model_from_haiku(
    transformed_forward_pass=hk.transform(forward_pass),
    sample_batch={'x': np.zeros((1,) + W.IMAGE_SHAPE, np.float32), 'y': np.zeros(1, np.int32)},
    train_loss=lambda b, p: fedjax.metrics.unreduced_cross_entropy_loss(b['y'], p),
    eval_metrics={'loss': fedjax.metrics.CrossEntropyLoss(), 'accuracy': fedjax.metrics.Accuracy()},
  )


def main():
  args = W.parse_args('fedjax')
  import importlib.metadata as md

  import fedjax
  import jax
  from fedjax.algorithms import fed_avg

  model = make_model(args.model)
  clients = [
    (str(i).encode(), fedjax.ClientDataset({'x': x, 'y': y}))
    for i, (x, y) in enumerate(W.load_clients())
  ]
  algorithm = fed_avg.federated_averaging(
    grad_fn=fedjax.model_grad(model),
    client_optimizer=fedjax.optimizers.sgd(W.CLIENT_LR),
    server_optimizer=fedjax.optimizers.sgd(W.SERVER_LR),
    client_batch_hparams=fedjax.ShuffleRepeatBatchHParams(
      batch_size=W.BATCH_SIZE, num_epochs=W.LOCAL_EPOCHS, skip_shuffle=True
    ),
  )
  state = algorithm.init(model.init(jax.random.PRNGKey(0)))

  total = args.warmup + args.rounds
  rngs = jax.random.split(jax.random.PRNGKey(1), total * W.NUM_CLIENTS)
  rounds = [
    [(cid, cds, rngs[r * W.NUM_CLIENTS + i]) for i, (cid, cds) in enumerate(clients)]
    for r in range(total)
  ]
  jax.block_until_ready(rngs)

  x_all, y_all = W.load_all()
  logits_fn = lambda p: lambda xb: model.apply_for_eval(p, {'x': xb})  # noqa: E731
  init_loss, _ = W.numpy_eval(logits_fn(state.params), x_all, y_all)

  times = []
  for r in range(total):
    t0 = time.perf_counter()
    state, _ = algorithm.apply(state, rounds[r])
    jax.block_until_ready(state.params)
    times.append(time.perf_counter() - t0)

  loss, acc = W.numpy_eval(logits_fn(state.params), x_all, y_all)
  W.check_and_report(
    peer='fedjax',
    model=args.model,
    round_times=times,
    warmup=args.warmup,
    timer_includes=TIMER,
    versions={
      'fedjax': md.version('fedjax'),
      'jax': jax.__version__,
      'jaxlib': md.version('jaxlib'),
      'dm-haiku': md.version('dm-haiku'),
    },
    final_loss=loss,
    final_accuracy=acc,
    initial_loss=init_loss,
    extra={'jax_backend': jax.default_backend()},
  )


if __name__ == '__main__':
  main()
