"""Run in a subprocess with 8 forced CPU devices: sharded results equal single-device ones."""

import os
import sys

assert 'xla_force_host_platform_device_count=8' in os.environ.get('XLA_FLAGS', '')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from fedjax_like.core import cohort  # noqa: E402
from fedjax_like.core.engine import Engine, Program  # noqa: E402
from fedjax_like.core.engine.place import mesh  # noqa: E402

assert jax.device_count() == 8, jax.devices()


def client_fn(shared, x, w):
  return {'out': w * jnp.tanh(x @ shared), 'w': w}


rng = np.random.default_rng(0)
shared = rng.normal(size=(4, 3)).astype(np.float32)
xs = rng.normal(size=(13, 4)).astype(np.float32)  # 13 clients: not a multiple of 8
ws = rng.uniform(size=13).astype(np.float32)
expected_sum = sum(client_fn(shared, x, w)['out'] for x, w in zip(xs, ws))
for strategy in ('vmap', 'sequential', 'chunked', 'lanes'):
  config = cohort.ExecutionConfig(strategy, chunk_size=2, shard=True)
  assert mesh(config).size == 8
  engine = Engine(config)
  program = lambda s, x, w: Program.of_function(client_fn, (s, x, w), (None, 0, 0))  # noqa: E731
  total = jax.jit(lambda s, x, w: engine.sum(program(s, x, w)))(shared, xs, ws)
  np.testing.assert_allclose(total['out'], expected_sum, rtol=1e-5, atol=1e-6)
  stacked = jax.jit(lambda s, x, w: engine.map(program(s, x, w)))(shared, xs, ws)
  assert stacked['out'].shape == (13, 3)
  np.testing.assert_allclose(stacked['w'], ws)

# A whole FedAvg process: sharded over 8 devices equals one device, to 1e-5.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'learning'))
import flax.linen as nn  # noqa: E402

import fedjax_like as fl  # noqa: E402
from fedjax_like.data import Dataset, pack_cohort  # noqa: E402

spec = (jax.ShapeDtypeStruct((12,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
model = fl.models.from_linen(nn.Dense(5), spec)
clients = [
    Dataset((rng.normal(size=(n, 12)).astype(np.float32), rng.integers(0, 5, n).astype(np.int32)))
    .batch(4)
    for n in (7, 13, 4, 10, 5, 9, 3, 8, 11, 6, 2)
]
clients = [d for d in clients]
for i, d in enumerate(clients):
  d.client_id = f'client_{i}'  # stateful clients (SCAFFOLD) are keyed by id
builders = {
    'weighted': lambda: fl.learning.algorithms.build_weighted_fed_avg(
        model, fl.learning.optimizers.build_sgdm(0.1, momentum=0.9)
    ),
    # Uniform weighting would count padding clients if they were not masked out.
    'unweighted': lambda: fl.learning.algorithms.build_unweighted_fed_avg(
        model, fl.learning.optimizers.build_sgdm(0.1)
    ),
    'scaffold': lambda: fl.learning.algorithms.build_scaffold(
        model, client_learning_rate=0.1, num_total_clients=len(clients)
    ),
}
for name, build in builders.items():
  results = {}
  for shard, strategy in ((False, 'auto'), (True, 'auto'), (True, 'lanes')):
    with cohort.execution(strategy, shard=shard):
      process = build()
      state = process.initialize()
      for _ in range(3):
        state, metrics = process.next(state, clients)  # 11 clients: padded to 16 when sharded
      results[shard, strategy] = (state.global_model_weights, metrics)
  if name == 'scaffold':  # per-client states with a cohort packed once (kept placed), sharded
    with cohort.execution('auto', shard=True):
      process = build()
      state = process.initialize()
      packed = pack_cohort(clients)
      for _ in range(3):
        state, metrics = process.next(state, packed)
      results[True, 'packed'] = (state.global_model_weights, metrics)
  for key in [k for k in ((True, 'auto'), (True, 'lanes'), (True, 'packed')) if k in results]:
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        results[False, 'auto'],
        results[key],
    )
  print(name, 'sharded (auto, lanes) == single device')
# A ragged cohort that divides over the devices runs in step groups, packed in blocks (each block
# dealt device-major); sharded still equals one device, and the groups really split the cohort.
sizes = [int(n) for n in np.r_[np.full(8, 60), rng.integers(1, 9, 56)]]
ragged = [
    Dataset((rng.normal(size=(n, 12)).astype(np.float32), rng.integers(0, 5, n).astype(np.int32)),
            client_id=f'r{i}').batch(4)
    for i, n in enumerate(sizes)
]
results = {}
for shard, strategy in ((False, 'vmap'), (True, 'vmap'), (True, 'lanes'), (False, 'lanes')):
  with cohort.execution(strategy, shard=shard):
    process = builders['weighted']()
    state = process.initialize()
    for _ in range(2):
      state, metrics = process.next(state, ragged)
    layout = process._last_layout
    if strategy == 'vmap':
      assert layout.step_groups is not None and len(layout.step_groups) > 1, layout
    else:
      assert layout.lanes is not None and layout.padding_waste <= 0.10, layout
    results[shard, strategy] = (state.global_model_weights, metrics)
for key in ((True, 'vmap'), (True, 'lanes'), (False, 'lanes')):
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      results[False, 'vmap'],
      results[key],
  )
print('ragged blocks: sharded == single device')


# A CNN: on CPU its convolutions run on the native kernels (an FFI call on each of the 8 devices);
# sharded equals one device, and both equal the im2col lowering.
class SmallCNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(16, (3, 3), padding='SAME')(x[..., None]))
    x = nn.relu(nn.Conv(16, (3, 3), padding='VALID')(x))
    return nn.Dense(5)(x.reshape(x.shape[0], -1))


image_spec = (jax.ShapeDtypeStruct((6, 6), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
cnn = fl.models.from_linen(SmallCNN(), image_spec)
images = [
    Dataset((rng.normal(size=(n, 6, 6)).astype(np.float32), rng.integers(0, 5, n).astype(np.int32)),
            client_id=f'i{i}').batch(4)
    for i, n in enumerate((7, 13, 4, 10, 5, 9, 3, 8, 11))
]
results = {}
for shard, lowering in ((False, 'native'), (True, 'native'), (False, 'im2col')):
  with cohort.execution('auto', shard=shard, conv_lowering=lowering):
    sgd = fl.learning.optimizers.build_sgdm(0.1)
    process = fl.learning.algorithms.build_weighted_fed_avg(cnn, sgd)
    state = process.initialize()
    for _ in range(2):
      state, metrics = process.next(state, images)
    uses_kernels = 'fjl_conv2d' in process._last_compiled.as_text()
    assert uses_kernels == (lowering == 'native'), (shard, lowering)
    results[shard, lowering] = (state.global_model_weights, metrics)
for key in ((True, 'native'), (False, 'im2col')):
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      results[False, 'native'],
      results[key],
  )
print('CNN on native kernels: sharded == single device == im2col')
print('SHARDED OK')
