"""One process of a 2-process run on localhost (CPU collectives): prints the final weights.

Usage: python _multihost_check.py PROCESS_ID PORT   (PROCESS_ID -1: a single-process reference)
"""

import sys

import jax

process_id, port = int(sys.argv[1]), sys.argv[2]
if process_id >= 0:
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(
      coordinator_address=f'127.0.0.1:{port}', num_processes=2, process_id=process_id
  )
  assert jax.device_count() == 2 and jax.process_count() == 2

import flax.linen as nn  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import fedjax_like as fl  # noqa: E402
from fedjax_like.core import cohort  # noqa: E402
from fedjax_like.data import Dataset  # noqa: E402

rng = np.random.default_rng(0)
spec = (jax.ShapeDtypeStruct((12,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
model = fl.models.from_linen(nn.Dense(5), spec)
clients = [
    Dataset((rng.normal(size=(n, 12)).astype(np.float32), rng.integers(0, 5, n).astype(np.int32)))
    .batch(4)
    for n in (7, 13, 4, 10, 5)
]
with cohort.execution('auto', shard=process_id >= 0):
  process = fl.learning.algorithms.build_weighted_fed_avg(
      model, fl.learning.optimizers.build_sgdm(0.1, momentum=0.9)
  )
  state = process.initialize()
  for _ in range(3):
    state, metrics = process.next(state, clients)
  kernel = state.global_model_weights.trainable['kernel']
  local = np.asarray(kernel.addressable_data(0) if hasattr(kernel, 'addressable_data') else kernel)
  loss = metrics['client_work']['train']['loss']
  loss = float(np.asarray(loss.addressable_data(0) if hasattr(loss, 'addressable_data') else loss))
print('WEIGHTS', ' '.join(f'{v:.7e}' for v in local.ravel()), flush=True)
print('LOSS', f'{loss:.7e}', flush=True)
