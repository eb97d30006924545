"""Intrinsics against NumPy over the clients' values; placement errors; printed types."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_like.core import (
    CLIENTS,
    SERVER,
    FederatedValue,
    cohort,
    federated_broadcast,
    federated_map,
    federated_max,
    federated_mean,
    federated_min,
    federated_sum,
    federated_value,
    federated_zip,
)

RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 3)).astype(np.float32)
W = np.array([1.0, 2.0, 0.0, 0.5, 3.0, 1.5], np.float32)


@pytest.mark.parametrize('strategy', ['vmap', 'sequential', 'chunked'])
def test_broadcast_map_sum_mean(strategy):
  shift = np.array([1.0, -2.0, 0.5], np.float32)

  @jax.jit
  def computation(server_shift, client_x, client_w):
    at_clients = federated_broadcast(federated_value(server_shift, SERVER))
    shifted = federated_map(lambda s, x: x + s, (at_clients, FederatedValue(client_x, CLIENTS)))
    weights = FederatedValue(client_w, CLIENTS)
    return (
        federated_sum(shifted).value,
        federated_mean(shifted, weights).value,
        federated_mean(shifted).value,
    )

  with cohort.execution(strategy, chunk_size=4):
    total, weighted, plain = computation(shift, X, W)
  np.testing.assert_allclose(total, (X + shift).sum(0), rtol=1e-5)
  np.testing.assert_allclose(weighted, (W[:, None] * (X + shift)).sum(0) / W.sum(), rtol=1e-5)
  np.testing.assert_allclose(plain, (X + shift).mean(0), rtol=1e-5)


def test_zip_min_max_and_materialized_map():
  a = FederatedValue(X, CLIENTS)
  b = FederatedValue(W, CLIENTS)
  zipped = federated_zip((a, b))
  first, second = zipped.value
  np.testing.assert_allclose(first, X)
  np.testing.assert_allclose(second, W)
  np.testing.assert_allclose(federated_min(a).value, X.min(0))
  np.testing.assert_allclose(federated_max(a).value, X.max(0))
  squared = federated_map(lambda x: x**2, a)
  np.testing.assert_allclose(squared.value, X**2, rtol=1e-6)
  pair = federated_map(lambda x: (x, x.sum()), a)
  np.testing.assert_allclose(pair[1].value, X.sum(1), rtol=1e-5)  # field selection stays per client


def test_type_signatures_print_like_tff():
  server = federated_value(jnp.zeros(10), SERVER)
  assert str(server.type_signature) == 'float32[10]@SERVER'
  clients = FederatedValue(jnp.zeros((4, 10)), CLIENTS)
  assert str(clients.type_signature) == '{float32[10]}@CLIENTS'
  assert str(federated_broadcast(server).type_signature) == 'float32[10]@CLIENTS'
  mapped = federated_map(lambda x: {'a': x.sum(), 'b': x.astype(jnp.int32)}, clients)
  assert str(mapped.type_signature) == '{<a=float32,b=int32[10]>}@CLIENTS'


def test_placement_errors_name_operator_and_types():
  server = federated_value(jnp.zeros(3), SERVER)
  clients = FederatedValue(jnp.zeros((4, 3)), CLIENTS)
  with pytest.raises(TypeError, match=r'federated_sum expects .*@CLIENTS; got float32\[3\]@SERVER'):
    federated_sum(server)
  with pytest.raises(TypeError, match=r'federated_map expects.*float32\[3\]@SERVER.*federated_broadcast'):
    federated_map(lambda x: x, server)
  with pytest.raises(TypeError, match=r'federated_broadcast expects a value of type T@SERVER; got \{float32\[3\]\}@CLIENTS'):
    federated_broadcast(clients)
  with pytest.raises(TypeError, match='all-equal'):
    federated_sum(federated_broadcast(server))
