"""A tiny model and small packed cohorts, shared by the packing and source tests."""

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_like.data import Dataset
from fedjax_like.data.packing import pack_cohort

SPEC = (jax.ShapeDtypeStruct((3,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))


class TinyModel:
  input_spec = SPEC
  num_outputs = 2


def small_cohort(sizes):
  rng = np.random.default_rng(0)
  return pack_cohort([
      Dataset((rng.normal(size=(n, 3)).astype(np.float32), np.zeros(n, np.int32)),
              client_id=f'c{i}').batch(2)
      for i, n in enumerate(sizes)
  ])
