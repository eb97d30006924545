"""SCAFFOLD against a NumPy reference of Algorithm 1 (option II); per-client state on the host."""

import jax
import numpy as np
import pytest
from learning_reference import (
    Sums,
    assert_metrics,
    assert_params,
    batches_of,
    dense_model,
    gradient,
    initial_params,
    make_clients,
)

import fedjax_like as fl
from fedjax_like.data import Dataset

SIZES = [7, 13, 4, 10, 6]
COHORTS = [[0, 1, 2], [1, 3], [0, 3, 2]]  # partial participation: clients return with their c_i
N, LR_L, LR_G = 8, 0.1, 0.7


def reference_scaffold(clients, params, cohorts):
  """x, c at the server; c_i per client (zero until seen); option II control variates."""
  x = list(params)
  c = [np.zeros_like(p) for p in x]
  c_client = {}
  history = []
  for cohort in cohorts:
    sums, delta_y, delta_c = Sums(), [], []
    for i in cohort:
      ci = c_client.get(i, [np.zeros_like(p) for p in x])
      y = [p.copy() for p in x]
      steps = 0
      for xb, yb in batches_of(*clients[i]):
        sums.add(*y, xb, yb)
        g = gradient(*y, xb, yb)
        y = [yk - LR_L * (gk - cik + ck) for yk, gk, cik, ck in zip(y, g, ci, c)]
        steps += 1
      ci_new = [cik - ck + (xk - yk) / (steps * LR_L) for cik, ck, xk, yk in zip(ci, c, x, y)]
      delta_y.append([yk - xk for yk, xk in zip(y, x)])
      delta_c.append([a - b for a, b in zip(ci_new, ci)])
      c_client[i] = ci_new
    x = [xk + LR_G * np.mean([d[k] for d in delta_y], axis=0) for k, xk in enumerate(x)]
    c = [ck + np.sum([d[k] for d in delta_c], axis=0) / N for k, ck in enumerate(c)]
    history.append(([p.copy() for p in x], [p.copy() for p in c], dict(c_client), sums.metrics()))
  return history


def as_pair(tree):
  return np.asarray(tree['kernel']), np.asarray(tree['bias'])


def test_scaffold_matches_numpy_reference_with_returning_clients():
  model, datasets = dense_model(), make_clients(SIZES)
  process = fl.learning.algorithms.build_scaffold(
      model, client_learning_rate=LR_L, num_total_clients=N, server_learning_rate=LR_G
  )
  reference = reference_scaffold(
      [d.elements for d in datasets], initial_params(process), COHORTS
  )
  state = process.initialize()
  for cohort, (x, c, c_client, metrics) in zip(COHORTS, reference):
    state, got = process.next(state, [datasets[i].batch(4) for i in cohort])
    assert_params(state, *x)
    assert_metrics(got['client_work']['train'], metrics)
    server_c = as_pair(state.client_work.server.control_variate)
    for k in range(2):
      np.testing.assert_allclose(server_c[k], c[k], rtol=1e-5, atol=1e-5)
    store = state.client_work.clients
    assert store.client_ids == sorted(f'client_{i}' for i in c_client)
    for i, ci in c_client.items():
      got_ci = as_pair(store.get(f'client_{i}'))
      for k in range(2):
        np.testing.assert_allclose(got_ci[k], ci[k], rtol=1e-5, atol=1e-5)
  unseen = as_pair(state.client_work.clients.get('client_4'))
  assert not np.any(unseen[0]) and not np.any(unseen[1])


def test_scaffold_state_is_a_value_old_states_stay_valid():
  model, datasets = dense_model(), make_clients(SIZES)
  process = fl.learning.algorithms.build_scaffold(model, LR_L, num_total_clients=N)
  cohort = [d.batch(4) for d in datasets[:3]]
  first, _ = process.next(process.initialize(), cohort)
  before = jax.tree.map(np.copy, first.client_work.clients.get('client_0'))
  a, _ = process.next(first, cohort)
  b, _ = process.next(first, cohort)  # same old state again: same result, old store untouched
  jax.tree.map(np.testing.assert_array_equal, a.global_model_weights, b.global_model_weights)
  jax.tree.map(
      np.testing.assert_array_equal, a.client_work.clients.get('client_0'),
      b.client_work.clients.get('client_0'),
  )
  jax.tree.map(np.testing.assert_array_equal, first.client_work.clients.get('client_0'), before)
  assert len(jax.tree.leaves(first)) > len(jax.tree.leaves(process.initialize()))  # a pytree


def test_scaffold_needs_client_ids():
  model = dense_model()
  process = fl.learning.algorithms.build_scaffold(model, LR_L, num_total_clients=N)
  x, y = make_clients([5])[0].elements
  anonymous = Dataset((x, y)).batch(4)
  with pytest.raises(ValueError, match='client id'):
    process.next(process.initialize(), [anonymous])
  named = Dataset((x, y), client_id='same').batch(4)
  with pytest.raises(ValueError, match='distinct'):
    process.next(process.initialize(), [named, named])


def test_scaffold_rejects_bad_arguments():
  with pytest.raises(ValueError, match='num_total_clients'):
    fl.learning.algorithms.build_scaffold(dense_model(), LR_L, num_total_clients=0)
