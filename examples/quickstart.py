"""The TensorFlow Federated quickstart, line for line, on fedjax_like.

Federated EMNIST (TFF's published files) is used when it is in the local cache; otherwise the
offline default, scikit-learn's handwritten digits split across clients (same 28x28 `pixels` and
`label` format), so this runs with no network. Run it with `make run`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

import fedjax_like as fl

# Load simulation data.
if fl.data.emnist.available():
  print('Data: federated EMNIST (digits), from the local cache.')
  source, _ = fl.data.emnist.load_data()
else:
  print('Data: federated EMNIST is not cached; using the offline digits from scikit-learn.')
  source, _ = fl.data.digits.load_data()


def client_data(n):
  return source.create_tf_dataset_for_client(source.client_ids[n]).map(
      lambda e: (e['pixels'].reshape(-1), e['label'])
  ).repeat(10).batch(20)


# Pick a subset of client devices to participate in training.
train_data = [client_data(n) for n in range(3)]

# Wrap a Flax model for use with fedjax_like.
flax_model = nn.Dense(10, kernel_init=nn.initializers.zeros)  # softmax is in the loss
model = fl.models.from_linen(
    flax_model,
    input_spec=(jax.ShapeDtypeStruct((784,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32)),
)

# Simulate a few rounds of training with the selected client devices.
trainer = fl.learning.algorithms.build_weighted_fed_avg(
    model, client_optimizer_fn=fl.learning.optimizers.build_sgdm(learning_rate=0.1)
)
state = trainer.initialize()
for _ in range(5):
  result = trainer.next(state, train_data)
  state = result.state
  metrics = result.metrics
  print(metrics['client_work']['train']['accuracy'])
