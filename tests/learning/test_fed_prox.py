"""FedProx against a NumPy reference (sequential clients, plain loops); mu = 0 is FedAvg."""

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

SIZES = [7, 13, 4, 10]
ROUNDS = 3


def reference_fed_prox(clients, w, b, lr, mu, weighted):
  """Each step: g + mu (v - w); then FedAvg's weighted mean of w - v_i, server SGD at 1."""
  history = []
  for _ in range(ROUNDS):
    sums, updates, weights = Sums(), [], []
    for x, y in clients:
      vw, vb = w.copy(), b.copy()
      for xb, yb in batches_of(x, y):
        sums.add(vw, vb, xb, yb)
        gw, gb = gradient(vw, vb, xb, yb)
        vw = vw - lr * (gw + mu * (vw - w))
        vb = vb - lr * (gb + mu * (vb - b))
      updates.append((w - vw, b - vb))
      weights.append(float(len(x)) if weighted else 1.0)
    p = np.array(weights) / sum(weights)
    w = w - sum(pi * u[0] for pi, u in zip(p, updates))
    b = b - sum(pi * u[1] for pi, u in zip(p, updates))
    history.append((w.copy(), b.copy(), sums.metrics()))
  return history


@pytest.mark.parametrize('weighted', [True, False], ids=['weighted', 'unweighted'])
def test_fed_prox_matches_numpy_reference(weighted):
  model, datasets = dense_model(), make_clients(SIZES)
  build = (
      fl.learning.algorithms.build_weighted_fed_prox
      if weighted
      else fl.learning.algorithms.build_unweighted_fed_prox
  )
  process = build(model, 0.5, fl.learning.optimizers.build_sgdm(0.1))
  reference = reference_fed_prox(
      [d.elements for d in datasets], *initial_params(process), lr=0.1, mu=0.5, weighted=weighted
  )
  state = process.initialize()
  for w, b, metrics in reference:
    state, got = process.next(state, [d.batch(4) for d in datasets])
    assert_params(state, w, b)
    assert_metrics(got['client_work']['train'], metrics)


def test_fed_prox_with_mu_zero_equals_fed_avg():
  model, datasets = dense_model(), make_clients(SIZES)
  opt = fl.learning.optimizers.build_sgdm(0.1, momentum=0.9)
  prox = fl.learning.algorithms.build_weighted_fed_prox(model, 0.0, opt)
  avg = fl.learning.algorithms.build_weighted_fed_avg(model, opt)
  s_prox, s_avg = prox.initialize(), avg.initialize()
  for _ in range(ROUNDS):
    s_prox, m_prox = prox.next(s_prox, [d.batch(4) for d in datasets])
    s_avg, m_avg = avg.next(s_avg, [d.batch(4) for d in datasets])
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
      (s_prox.global_model_weights, m_prox),
      (s_avg.global_model_weights, m_avg),
  )


def test_fed_prox_pulls_toward_the_broadcast_weights():
  # A strong proximal term shrinks every client's move away from w (||w - v_i|| decreases in mu).
  model, datasets = dense_model(), make_clients(SIZES)
  moves = []
  for mu in (0.0, 1.0, 5.0):
    process = fl.learning.algorithms.build_weighted_fed_prox(
        model, mu, fl.learning.optimizers.build_sgdm(0.1)
    )
    state = process.initialize()
    new_state, _ = process.next(state, [d.batch(4) for d in datasets])
    moved = jax.tree.map(
        lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).sum(),
        new_state.global_model_weights.trainable,
        state.global_model_weights.trainable,
    )
    moves.append(sum(jax.tree.leaves(moved)))
  assert moves[0] > moves[1] > moves[2]


def test_fed_prox_rejects_negative_mu():
  with pytest.raises(ValueError, match='proximal_strength'):
    fl.learning.algorithms.build_weighted_fed_prox(
        dense_model(), -0.1, fl.learning.optimizers.build_sgdm(0.1)
    )
