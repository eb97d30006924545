"""Top-k with error feedback, run over rounds with explicit client states against NumPy loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from aggregator_helpers import value_type_of

from fedjax_like.aggregators import (
    ClientStatesOutput,
    SumFactory,
    TopKSparsificationFactory,
    UnweightedMeanFactory,
    clipping_factory,
    zeroing_factory,
)
from fedjax_like.core import CLIENTS, FederatedValue

RNG = np.random.default_rng(17)
NUM_CLIENTS = 6


def np_top_k(a, k):
  flat = a.reshape(-1)
  keep = np.argsort(-np.abs(flat), kind='stable')[:k]
  out = np.zeros_like(flat)
  out[keep] = flat[keep]
  return out.reshape(a.shape)


def run(process, rounds, cohorts, weights=None):
  """Rounds over cohorts of client indices; the test keeps every client's state (a host store)."""

  @jax.jit
  def step(state, values, states, w):
    w = None if w is None else FederatedValue(w, CLIENTS)
    out = process.next(state, FederatedValue(values, CLIENTS), w, FederatedValue(states, CLIENTS))
    assert isinstance(out, ClientStatesOutput)
    return out.state, out.result.value, out.measurements, out.client_states.value

  store = [process.initial_client_state] * NUM_CLIENTS
  state, results, measured = process.initialize(), [], []
  for r, (values, cohort) in enumerate(zip(rounds, cohorts)):
    gathered = jax.tree.map(lambda *xs: jnp.stack(xs), *[store[i] for i in cohort])
    w = None if weights is None else weights[r]
    state, result, m, new = step(state, values, gathered, w)
    for j, i in enumerate(cohort):
      store[i] = jax.tree.map(lambda x, j=j: x[j], new)
    results.append(jax.tree.map(np.asarray, result))
    measured.append(m)
  return results, measured, [jax.tree.map(np.asarray, s) for s in store]


def make_rounds(num_rounds, cohort_size=4):
  cohorts = [sorted(RNG.choice(NUM_CLIENTS, cohort_size, replace=False)) for _ in range(num_rounds)]
  rounds = [{'w': RNG.normal(size=(cohort_size, 10, 5)).astype(np.float32),
             'b': RNG.normal(size=(cohort_size, 3)).astype(np.float32)} for _ in range(num_rounds)]
  return rounds, cohorts


def test_matches_numpy_and_loses_nothing_over_rounds():
  rounds, cohorts = make_rounds(5)
  fraction, threshold = 0.1, 3  # 'w' (50 elements) keeps 5; 'b' (3) is sent whole
  process = TopKSparsificationFactory(SumFactory(), fraction, threshold).create(
      value_type_of(rounds[0]))
  assert process.map_reduce is None
  results, measured, store = run(process, rounds, cohorts)
  residual = {i: {'w': np.zeros((10, 5)), 'b': np.zeros(3)} for i in range(NUM_CLIENTS)}
  transmitted = {'w': 0.0, 'b': 0.0}
  for values, cohort, result in zip(rounds, cohorts, results):
    expected = {'w': 0.0, 'b': 0.0}
    for j, i in enumerate(cohort):
      a = values['w'][j] + residual[i]['w']
      sent = np_top_k(a, 5)
      residual[i] = {'w': a - sent, 'b': np.zeros(3)}
      expected['w'] = expected['w'] + sent
      expected['b'] = expected['b'] + values['b'][j]
    for name in expected:
      np.testing.assert_allclose(result[name], expected[name], rtol=1e-5, atol=1e-5)
      transmitted[name] = transmitted[name] + result[name]
  for i in range(NUM_CLIENTS):
    np.testing.assert_allclose(store[i]['w'], residual[i]['w'], rtol=1e-5, atol=1e-5)
  # Nothing lost: everything sent plus what the clients still hold is everything they had.
  truth = sum(v['w'].sum(0) for v in rounds)
  held = sum(s['w'] for s in store)
  np.testing.assert_allclose(transmitted['w'] + held, truth, rtol=1e-5, atol=1e-4)
  assert float(measured[0]['bits_per_client']) == 5 * (32 + 6) + 32 * 3
  assert float(measured[0]['float32_bits_per_client']) == 32 * 53


def test_without_error_feedback_the_residual_stays_zero():
  rounds, cohorts = make_rounds(2)
  process = TopKSparsificationFactory(SumFactory(), 0.2, error_feedback=False).create(
      value_type_of(rounds[0]))
  results, _, store = run(process, rounds, cohorts)
  for s in store:
    assert not np.any(s['w']) and not np.any(s['b'])
  expected = sum(np_top_k(x, 10) for x in rounds[1]['w'])
  np.testing.assert_allclose(results[1]['w'], expected, rtol=1e-5, atol=1e-5)


def test_a_non_finite_client_is_passed_on_and_keeps_its_residual():
  rounds, cohorts = make_rounds(2)
  cohorts = [[0, 1, 2, 3], [0, 1, 2, 3]]
  rounds[1]['w'][2, 0, 0] = np.nan
  process = TopKSparsificationFactory(UnweightedMeanFactory(), 0.1).create(
      value_type_of(rounds[0]))
  _, measured, store = run(process, rounds, cohorts)
  assert int(measured[1]['top_k']['num_clients_non_finite']) == 1
  first = rounds[0]['w'][2] - np_top_k(rounds[0]['w'][2], 5)
  np.testing.assert_allclose(store[2]['w'], first, rtol=1e-5, atol=1e-6)


def test_wrappers_keep_the_client_state():
  rounds, cohorts = make_rounds(2)
  factory = zeroing_factory(1e6, clipping_factory(1e6, TopKSparsificationFactory(
      UnweightedMeanFactory(), 0.1)))
  process = factory.create(value_type_of(rounds[0]))
  assert process.initial_client_state is not None
  results, measured, _ = run(process, rounds, cohorts)
  plain, _, _ = run(TopKSparsificationFactory(UnweightedMeanFactory(), 0.1).create(
      value_type_of(rounds[0])), rounds, cohorts)
  np.testing.assert_allclose(results[1]['w'], plain[1]['w'], rtol=1e-6)
  assert 'bits_per_client' in measured[0]['zeroing']['clipping']


def test_errors():
  values = {'x': np.ones((2, 4), np.float32)}
  process = TopKSparsificationFactory().create(value_type_of(values))
  with pytest.raises(TypeError, match='keeps client state'):
    process.next(process.initialize(), FederatedValue(values, CLIENTS))
  with pytest.raises(ValueError, match=r'fraction must be in \(0, 1\]'):
    TopKSparsificationFactory(fraction=0.0)
  with pytest.raises(TypeError, match='compresses floating-point values'):
    TopKSparsificationFactory().create(jax.ShapeDtypeStruct((3,), jnp.int32))
