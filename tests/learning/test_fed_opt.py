"""FedAdam / FedYogi / FedAdagrad (Reddi et al.) and FedAvg with server Adam, against NumPy."""

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


def local_deltas(clients, w, b, lr, sums):
  """FedAvg's clients: plain local SGD; returns the example-weighted mean of v_i - w."""
  deltas, weights = [], []
  for x, y in clients:
    vw, vb = w.copy(), b.copy()
    for xb, yb in batches_of(x, y):
      sums.add(vw, vb, xb, yb)
      gw, gb = gradient(vw, vb, xb, yb)
      vw, vb = vw - lr * gw, vb - lr * gb
    deltas.append((vw - w, vb - b))
    weights.append(float(len(x)))
  p = np.array(weights) / sum(weights)
  return [sum(pi * d[k] for pi, d in zip(p, deltas)) for k in range(2)]


def reference_reddi(clients, params, client_lr, variant, eta, beta_1, beta_2, tau):
  """Reddi et al. Algorithm 2: m, v without bias correction; x <- x + eta m / (sqrt(v) + tau)."""
  params = list(params)
  m = [np.zeros_like(p) for p in params]
  v = [np.full_like(p, tau**2) for p in params]
  history = []
  for _ in range(ROUNDS):
    sums = Sums()
    delta = local_deltas(clients, *params, client_lr, sums)
    for k in range(2):
      m[k] = beta_1 * m[k] + (1 - beta_1) * delta[k]
      d2 = delta[k] ** 2
      if variant == 'adagrad':
        v[k] = v[k] + d2
      elif variant == 'yogi':
        v[k] = v[k] - (1 - beta_2) * d2 * np.sign(v[k] - d2)
      else:
        v[k] = beta_2 * v[k] + (1 - beta_2) * d2
      params[k] = params[k] + eta * m[k] / (np.sqrt(v[k]) + tau)
    history.append((*[p.copy() for p in params], sums.metrics()))
  return history


@pytest.mark.parametrize('variant', ['adam', 'yogi', 'adagrad'])
def test_fed_opt_matches_the_papers_update(variant):
  model, datasets = dense_model(), make_clients(SIZES)
  build = getattr(fl.learning.algorithms, f'build_fed_{variant}')
  process = build(
      model, fl.learning.optimizers.build_sgdm(0.1), server_learning_rate=0.05,
      beta_1=0.9, beta_2=0.99, tau=1e-3,
  )
  reference = reference_reddi(
      [d.elements for d in datasets], initial_params(process), 0.1, variant, 0.05, 0.9, 0.99, 1e-3
  )
  state = process.initialize()
  for w, b, metrics in reference:
    state, got = process.next(state, [d.batch(4) for d in datasets])
    assert_params(state, w, b)
    assert_metrics(got['client_work']['train'], metrics)


def test_fed_avg_with_server_adam_and_tiny_learning_rates_matches_reference():
  # TFF's build_adam (bias-corrected, epsilon 1e-7) as FedAvg's server optimizer.
  lr_client, lr_server, b1, b2, eps = 1e-3, 1e-4, 0.9, 0.999, 1e-7
  model, datasets = dense_model(), make_clients(SIZES)
  process = fl.learning.algorithms.build_weighted_fed_avg(
      model,
      fl.learning.optimizers.build_sgdm(lr_client),
      server_optimizer_fn=fl.learning.optimizers.build_adam(lr_server, b1, b2, eps),
  )
  params = list(initial_params(process))
  m = [np.zeros_like(p) for p in params]
  v = [np.zeros_like(p) for p in params]
  state = process.initialize()
  for t in range(1, ROUNDS + 1):
    sums = Sums()
    delta = local_deltas([d.elements for d in datasets], *params, lr_client, sums)
    for k in range(2):
      g = -delta[k]  # the server's pseudo-gradient
      m[k] = b1 * m[k] + (1 - b1) * g
      v[k] = b2 * v[k] + (1 - b2) * g**2
      lr_t = lr_server * np.sqrt(1 - b2**t) / (1 - b1**t)  # TFF: epsilon outside sqrt(v)
      params[k] = params[k] - lr_t * m[k] / (np.sqrt(v[k]) + eps)
    state, got = process.next(state, [d.batch(4) for d in datasets])
    assert_params(state, *params, tol=dict(rtol=1e-5, atol=1e-6))
    assert_metrics(got['client_work']['train'], sums.metrics())


def test_fed_opt_rejects_unknown_variant_and_bad_tau():
  with pytest.raises(ValueError, match='variant'):
    fl.learning.algorithms.build_fedopt_server_optimizer('adamw')
  with pytest.raises(ValueError, match='tau'):
    fl.learning.algorithms.build_fedopt_server_optimizer('adam', tau=0.0)
