"""sequence_reduce: a fold over each client's batches, as a client loop or inside a client."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_like.core import (
    CLIENTS,
    SERVER,
    FederatedValue,
    cohort,
    federated_map,
    federated_value,
    sequence_reduce,
)

STRATEGIES = [('vmap', None), ('sequential', None), ('chunked', 3)]


@pytest.mark.parametrize('strategy,chunk', STRATEGIES)
def test_sequence_reduce_over_ragged_client_batches(strategy, chunk):
  rng = np.random.default_rng(3)
  num_clients, steps, batch = 5, 4, 3
  x = rng.normal(size=(num_clients, steps, batch)).astype(np.float32)
  example_mask = rng.uniform(size=(num_clients, steps, batch)) < 0.7
  example_mask[1] = False  # an empty client
  example_mask[2, 2:] = False  # padding steps
  x[~example_mask] = np.nan  # padding never reaches the sum

  def op(acc, element):
    (values, keep) = element
    return acc[0] + jnp.sum(jnp.where(keep, values, 0.0)), acc[1] + jnp.sum(keep)

  @jax.jit
  def computation(x, mask):
    data = FederatedValue((x, mask), CLIENTS)
    sums = sequence_reduce(data, (jnp.zeros(()), jnp.zeros((), jnp.int32)), op,
                           mask=FederatedValue(mask, CLIENTS))
    step_count = federated_map(
        lambda m: sequence_reduce(jnp.ones(m.shape[0]), jnp.zeros(()), lambda a, s: a + s, mask=m),
        FederatedValue(mask, CLIENTS),
    )
    return sums.value, step_count.value

  with cohort.execution(strategy, chunk_size=chunk):
    (totals, counts), steps_used = computation(x, example_mask)
  expected = np.where(example_mask, x, 0.0).sum(axis=(1, 2))
  np.testing.assert_allclose(totals, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(counts, example_mask.sum(axis=(1, 2)))
  np.testing.assert_array_equal(steps_used, example_mask.any(axis=2).sum(axis=1))
  with pytest.raises(TypeError, match=r'sequence_reduce expects .*@CLIENTS; got .*@SERVER'):
    sequence_reduce(federated_value(x[0], SERVER), 0.0, lambda a, s: a)
