"""Intrinsics against NumPy over the clients' values (weights, ragged cohorts, padding masks),
secure sum overflow, placement errors and printed types."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_like.core import (
    CLIENTS,
    SERVER,
    FederatedValue,
    cohort,
    federated_aggregate,
    federated_broadcast,
    federated_client_keys,
    federated_map,
    federated_max,
    federated_mean,
    federated_min,
    federated_secure_sum,
    federated_secure_sum_bitwidth,
    federated_sum,
    federated_value,
    federated_zip,
    num_real_clients,
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
  with pytest.raises(TypeError, match=r'federated_map \(argument 0\) expects.*float32\[3\]@SERVER.*federated_broadcast'):
    federated_map(lambda x, y: x + y, (server, clients))
  with pytest.raises(TypeError, match=r'federated_broadcast expects a value of type T@SERVER; got \{float32\[3\]\}@CLIENTS'):
    federated_broadcast(clients)
  with pytest.raises(TypeError, match='all-equal'):
    federated_sum(federated_broadcast(server))


# ----- ragged cohorts: padding clients hold garbage that no reduction may see ---------------------

STRATEGIES = [('vmap', None), ('sequential', None), ('chunked', 3)]


def ragged_cohort(num_real, num_padded, seed=1):
  """``[num_padded, 4]`` values whose padding rows are NaN / huge, and the client mask."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(num_padded, 4)).astype(np.float32)
  w = rng.uniform(0.1, 3.0, size=num_padded).astype(np.float32)
  x[num_real:] = np.nan
  w[num_real:] = 1e6
  mask = np.arange(num_padded) < num_real
  return x, w, mask


@pytest.mark.parametrize('strategy,chunk', STRATEGIES)
@pytest.mark.parametrize('num_real,num_padded', [(5, 8), (1, 4), (7, 7)])
def test_masked_reductions_match_numpy_over_real_clients(strategy, chunk, num_real, num_padded):
  x, w, mask = ragged_cohort(num_real, num_padded)
  real_x, real_w = x[mask].astype(np.float64), w[mask].astype(np.float64)

  @jax.jit
  def computation(x, w, mask):
    values = FederatedValue(x, CLIENTS, mask=mask)
    weights = FederatedValue(w, CLIENTS, mask=mask)
    doubled = federated_map(lambda v: 2.0 * v, values)  # keeps the mask
    return (
        federated_sum(doubled).value,
        federated_mean(values, weights).value,
        federated_mean(values).value,
        federated_min(values).value,
        federated_max(doubled).value,
        num_real_clients(values),
    )

  with cohort.execution(strategy, chunk_size=chunk):
    total, weighted, plain, low, high, count = computation(x, w, mask)
  np.testing.assert_allclose(total, 2.0 * real_x.sum(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(weighted, (real_w[:, None] * real_x).sum(0) / real_w.sum(), rtol=1e-5)
  np.testing.assert_allclose(plain, real_x.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(low, real_x.min(0), rtol=1e-6)
  np.testing.assert_allclose(high, 2.0 * real_x.max(0), rtol=1e-6)
  assert int(count) == num_real


def test_zero_weights_and_all_masked_cohort():
  x = np.ones((3, 2), np.float32)
  zero = FederatedValue(np.zeros(3, np.float32), CLIENTS)
  np.testing.assert_allclose(federated_mean(FederatedValue(x, CLIENTS), zero).value, [0.0, 0.0])
  nobody = FederatedValue(x, CLIENTS, mask=np.zeros(3, bool))
  np.testing.assert_allclose(federated_sum(nobody).value, [0.0, 0.0])
  assert np.all(np.isinf(federated_min(nobody).value))


def test_mask_and_value_sizes_are_checked():
  with pytest.raises(ValueError, match='bool \\[num_clients\\]'):
    FederatedValue(X, CLIENTS, mask=np.ones((6, 1), bool))
  with pytest.raises(TypeError, match='per-client'):
    FederatedValue(X, SERVER, mask=np.ones(6, bool))


@pytest.mark.parametrize('strategy,chunk', STRATEGIES)
def test_map_with_server_key_gives_each_client_its_split_key(strategy, chunk):
  key = jax.random.key(7)

  def noisy(x, client_key):
    return x + jax.random.normal(client_key, x.shape)

  @jax.jit
  def computation(key, x):
    clients = FederatedValue(x, CLIENTS)
    return federated_map(noisy, clients, key=federated_value(key, SERVER)).value

  with cohort.execution(strategy, chunk_size=chunk):
    out = computation(key, X)
  keys = jax.random.split(key, X.shape[0])
  expected = np.stack([np.asarray(noisy(X[i], keys[i])) for i in range(X.shape[0])])
  np.testing.assert_allclose(out, expected, rtol=1e-6)
  # Per-client keys given as {key}@CLIENTS are used as they are.
  per_client = federated_client_keys(key, FederatedValue(X, CLIENTS))
  again = federated_map(noisy, FederatedValue(X, CLIENTS), key=per_client).value
  np.testing.assert_allclose(again, expected, rtol=1e-6)


def test_federated_zip_structures():
  a, b = FederatedValue(X, CLIENTS), FederatedValue(W, CLIENTS)
  zipped = federated_zip({'x': a, 'w': b})
  assert str(zipped.type_signature) == '{<w=float32,x=float32[3]>}@CLIENTS'
  total = federated_sum(zipped).value
  np.testing.assert_allclose(total['x'], X.sum(0), rtol=1e-5)
  np.testing.assert_allclose(total['w'], W.sum(), rtol=1e-6)
  server = federated_zip((federated_value(1.0, SERVER), federated_value(jnp.zeros(2), SERVER)))
  assert str(server.type_signature) == '<float32,float32[2]>@SERVER'
  one_placement = r'federated_zip expects values at one placement; got .*@SERVER.*@CLIENTS'
  with pytest.raises(TypeError, match=one_placement):
    federated_zip((federated_value(1.0, SERVER), a))


@pytest.mark.parametrize('num_clients', [1, 2, 5, 8])
def test_federated_aggregate_matches_numpy(num_clients):
  rng = np.random.default_rng(num_clients)
  x = rng.normal(size=(num_clients, 3)).astype(np.float32)
  mask = np.ones(num_clients, bool)
  mask[-1] = num_clients == 1  # the last client is padding unless it is the only one
  zero = (jnp.zeros(3), jnp.zeros(3), jnp.zeros(()), jnp.full(3, -jnp.inf))

  def accumulate(acc, v):
    return acc[0] + v, acc[1] + v**2, acc[2] + 1.0, jnp.maximum(acc[3], v)

  def merge(a, b):
    return a[0] + b[0], a[1] + b[1], a[2] + b[2], jnp.maximum(a[3], b[3])

  def report(acc):
    mean = acc[0] / acc[2]
    return {'mean': mean, 'variance': acc[1] / acc[2] - mean**2, 'count': acc[2], 'max': acc[3]}

  values = FederatedValue(x, CLIENTS, mask=mask)
  out = jax.jit(lambda: federated_aggregate(values, zero, accumulate, merge, report).value)()
  real = x[mask].astype(np.float64)
  np.testing.assert_allclose(out['mean'], real.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out['variance'], real.var(0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out['max'], real.max(0))
  assert float(out['count']) == len(real)


# ----- secure sum --------------------------------------------------------------------------------


@pytest.mark.parametrize('strategy,chunk', STRATEGIES)
@pytest.mark.parametrize('bitwidth', [4, 12, 20, 31])
def test_secure_sum_equals_plain_sum_without_overflow(strategy, chunk, bitwidth):
  rng = np.random.default_rng(bitwidth)
  num_clients = 9
  top = 2**bitwidth // num_clients  # the true sum stays below 2**bitwidth
  values = {
      'a': rng.integers(0, top, size=(num_clients, 3)).astype(np.int32),
      'b': rng.integers(0, min(top, 255), size=(num_clients,)).astype(
          np.uint8 if bitwidth <= 8 else np.int32
      ),
  }
  mask = np.ones(num_clients, bool)
  mask[[2, 7]] = False
  values['a'][~mask] = -5  # out of range, but on padding clients: ignored

  @jax.jit
  def computation(values, mask):
    total, overflow = federated_secure_sum(
        FederatedValue(values, CLIENTS, mask=mask), bitwidth, with_overflow=True
    )
    return total.value, overflow.value

  with cohort.execution(strategy, chunk_size=chunk):
    total, overflow = computation(values, mask)
  np.testing.assert_array_equal(total['a'], values['a'][mask].astype(np.int64).sum(0))
  np.testing.assert_array_equal(total['b'], values['b'][mask].astype(np.int64).sum(0))
  assert total['a'].dtype == np.int32 and total['b'].dtype == values['b'].dtype
  assert not np.any(overflow['a']) and not np.any(overflow['b'])


def test_secure_sum_wraps_modulo_and_reports_overflow():
  bitwidth = 8
  x = np.array([[200, 10, 255], [100, 20, 0], [0, 30, 1]], np.int32)  # sums 300, 60, 256
  total, overflow = federated_secure_sum(FederatedValue(x, CLIENTS), bitwidth, with_overflow=True)
  np.testing.assert_array_equal(total.value, x.sum(0) % 256)
  np.testing.assert_array_equal(overflow.value, [True, False, True])
  # An out-of-range value is reduced modulo 2**bitwidth, and reported.
  y = np.array([[-1, 3], [2, 300]], np.int32)
  total, overflow = federated_secure_sum(FederatedValue(y, CLIENTS), bitwidth, with_overflow=True)
  np.testing.assert_array_equal(total.value, [(255 + 2) % 256, (3 + 300 % 256) % 256])
  np.testing.assert_array_equal(overflow.value, [True, True])
  # 32 bits in uint32: the full range wraps modulo 2**32.
  big = np.full((3, 2), 2**32 - 1, np.uint32)
  total, overflow = federated_secure_sum(FederatedValue(big, CLIENTS), 32, with_overflow=True)
  np.testing.assert_array_equal(total.value, np.full(2, (3 * (2**32 - 1)) % 2**32, np.uint32))
  assert np.all(overflow.value)
  # Without the report, TFF's signature: T@SERVER.
  plain = federated_secure_sum_bitwidth(FederatedValue(x, CLIENTS), 10)
  assert str(plain.type_signature) == 'int32[3]@SERVER'


def test_secure_sum_rejects_floats_and_bad_bitwidths():
  with pytest.raises(TypeError, match=r'integers .* got \{float32\[3\]\}@CLIENTS'):
    federated_secure_sum(FederatedValue(X, CLIENTS), 8)
  ints = FederatedValue(np.zeros((2, 3), np.int32), CLIENTS)
  with pytest.raises(TypeError, match=r'bitwidth=32 .*\(int32 holds 31 bits\)'):
    federated_secure_sum(ints, 32)
  with pytest.raises(ValueError, match='1..32'):
    federated_secure_sum(ints, 0)
  at_server = r'federated_secure_sum expects .*@CLIENTS; got int32\[3\]@SERVER'
  with pytest.raises(TypeError, match=at_server):
    federated_secure_sum(federated_value(jnp.zeros(3, jnp.int32), SERVER), 8)



def test_mean_of_integers_is_fractional():
  values = FederatedValue(np.array([1, 2, 6], np.int32), CLIENTS)
  weights = FederatedValue(np.array([0.5, 0.5, 0.0], np.float32), CLIENTS)
  np.testing.assert_allclose(federated_mean(values, weights).value, 1.5)
  np.testing.assert_allclose(federated_mean(values).value, 3.0)


def test_federated_map_at_server_applies_fn_and_keeps_the_placement():
  from fedjax_like.core import SERVER, federated_map, federated_value

  x = federated_value(jnp.arange(3.0), SERVER)
  y = federated_map(lambda a, b: a * 2 + b, (x, federated_value(1.0, SERVER)))
  assert y.placement is SERVER
  np.testing.assert_allclose(y.value, [1.0, 3.0, 5.0])
  with pytest.raises(TypeError, match='CLIENTS'):
    federated_map(lambda a, b: a + b, (x, federated_value(jnp.ones((2, 3)), CLIENTS)))
