"""FedSGD against a NumPy reference; one round is one gradient step on the cohort's pooled data."""

import numpy as np
import pytest
from learning_reference import (
    Sums,
    assert_metrics,
    assert_params,
    batches_of,
    dense_model,
    full_gradient,
    initial_params,
    make_clients,
)

import fedjax_like as fl

SIZES = [7, 13, 4, 10]
ROUNDS = 3


def reference_fed_sgd(clients, w, b, lr, weighted):
  """g_i = client's full-batch gradient at w; g = weighted mean; w <- w - lr g."""
  history = []
  for _ in range(ROUNDS):
    sums, grads, weights = Sums(), [], []
    for x, y in clients:
      for xb, yb in batches_of(x, y):
        sums.add(w, b, xb, yb)
      grads.append(full_gradient(w, b, x, y))
      weights.append(float(len(x)) if weighted else 1.0)
    p = np.array(weights) / sum(weights)
    w = w - lr * sum(pi * g[0] for pi, g in zip(p, grads))
    b = b - lr * sum(pi * g[1] for pi, g in zip(p, grads))
    history.append((w.copy(), b.copy(), sums.metrics()))
  return history


@pytest.mark.parametrize('weighted', [True, False], ids=['by-examples', 'uniform'])
def test_fed_sgd_matches_numpy_reference(weighted):
  model, datasets = dense_model(), make_clients(SIZES)
  weighting = (
      fl.learning.ClientWeighting.NUM_EXAMPLES if weighted else fl.learning.ClientWeighting.UNIFORM
  )
  process = fl.learning.algorithms.build_fed_sgd(
      model, fl.learning.optimizers.build_sgdm(0.5), client_weighting=weighting
  )
  reference = reference_fed_sgd(
      [d.elements for d in datasets], *initial_params(process), lr=0.5, weighted=weighted
  )
  state = process.initialize()
  for w, b, metrics in reference:
    state, got = process.next(state, [d.batch(4) for d in datasets])
    assert_params(state, w, b)
    assert_metrics(got['client_work']['train'], metrics)


def test_fed_sgd_round_is_one_centralized_gradient_step_on_the_union():
  model, datasets = dense_model(), make_clients(SIZES)
  process = fl.learning.algorithms.build_fed_sgd(model, fl.learning.optimizers.build_sgdm(0.3))
  w, b = initial_params(process)
  x = np.concatenate([d.elements[0] for d in datasets])
  y = np.concatenate([d.elements[1] for d in datasets])
  gw, gb = full_gradient(w, b, x, y)  # centralized: mean loss over the pooled examples
  state, _ = process.next(process.initialize(), [d.batch(4) for d in datasets])
  assert_params(state, w - 0.3 * gw, b - 0.3 * gb)
