"""MimeLite against a NumPy reference: SGD with momentum as base optimizer, frozen at clients."""

import numpy as np
import pytest
from learning_reference import (
    Sums,
    assert_metrics,
    assert_params,
    batches_of,
    dense_model,
    full_gradient,
    gradient,
    initial_params,
    make_clients,
)

import fedjax_like as fl

SIZES = [7, 13, 4, 10]
ROUNDS = 3
LR, BETA = 0.1, 0.9


def reference_mime_lite(clients, params, weighted):
  """Clients: y <- y - lr (g + beta m) with the server's m fixed; server: x <- mean y_i,
  m <- beta m + mean_i grad f_i(x) (full-batch gradients at x)."""
  x = list(params)
  m = [np.zeros_like(p) for p in x]
  history = []
  for _ in range(ROUNDS):
    sums, ys, hs, weights = Sums(), [], [], []
    for cx, cy in clients:
      hs.append(full_gradient(*x, cx, cy))
      y = [p.copy() for p in x]
      for xb, yb in batches_of(cx, cy):
        sums.add(*y, xb, yb)
        g = gradient(*y, xb, yb)
        y = [yk - LR * (gk + BETA * mk) for yk, gk, mk in zip(y, g, m)]
      ys.append(y)
      weights.append(float(len(cx)) if weighted else 1.0)
    p = np.array(weights) / sum(weights)
    h = [sum(pi * hi[k] for pi, hi in zip(p, hs)) for k in range(2)]
    x = [sum(pi * yi[k] for pi, yi in zip(p, ys)) for k in range(2)]
    m = [BETA * mk + hk for mk, hk in zip(m, h)]
    history.append(([a.copy() for a in x], [a.copy() for a in m], sums.metrics()))
  return history


@pytest.mark.parametrize('weighted', [True, False], ids=['weighted', 'unweighted'])
def test_mime_lite_matches_numpy_reference(weighted):
  model, datasets = dense_model(), make_clients(SIZES)
  base = fl.learning.optimizers.build_sgdm(LR, momentum=BETA)
  build = (
      fl.learning.algorithms.build_weighted_mime_lite
      if weighted
      else fl.learning.algorithms.build_unweighted_mime_lite
  )
  process = build(model, base)
  reference = reference_mime_lite(
      [d.elements for d in datasets], initial_params(process), weighted
  )
  state = process.initialize()
  for x, m, metrics in reference:
    state, got = process.next(state, [d.batch(4) for d in datasets])
    assert_params(state, *x)
    assert_metrics(got['client_work']['train'], metrics)
    momentum = state.client_work.optimizer_state[0].trace  # optax sgd: (TraceState, EmptyState)
    np.testing.assert_allclose(np.asarray(momentum['kernel']), m[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(momentum['bias']), m[1], rtol=1e-5, atol=1e-5)


def test_mime_lite_rejects_a_full_gradient_aggregator_that_is_not_a_weighted_sum():
  with pytest.raises(TypeError, match='full_gradient_aggregator'):
    fl.learning.algorithms.build_weighted_mime_lite(
        dense_model(), fl.learning.optimizers.build_sgdm(0.1),
        full_gradient_aggregator=fl.aggregators.UnweightedMeanFactory(),
    )


def test_server_optimizer_is_tffs_name_and_server_optimizer_fn_an_alias():
  datasets = make_clients(SIZES)
  base = fl.learning.optimizers.build_sgdm(LR, momentum=BETA)
  server = fl.learning.optimizers.build_sgdm(0.5)
  build = fl.learning.algorithms.build_weighted_mime_lite
  states = []
  for kwargs in ({'server_optimizer': server}, {'server_optimizer_fn': server}):
    process = build(dense_model(), base, **kwargs)
    state, _ = process.next(process.initialize(), [d.batch(4) for d in datasets])
    states.append(state.global_model_weights)
  np.testing.assert_array_equal(
      np.asarray(states[0].trainable['kernel']), np.asarray(states[1].trainable['kernel'])
  )
  default = build(dense_model(), base)
  state, _ = default.next(default.initialize(), [d.batch(4) for d in datasets])
  assert not np.allclose(np.asarray(state.global_model_weights.trainable['kernel']),
                         np.asarray(states[0].trainable['kernel']))
  with pytest.raises(TypeError, match='not both'):
    build(dense_model(), base, server_optimizer=server, server_optimizer_fn=server)
