"""Learning rates scheduled by round (client and server) and client weighting, against NumPy."""

import numpy as np
import optax
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


def reference_fed_avg(clients, w, b, client_lr, server_lr, weigh, momentum=0.0):
  """Round t: local SGD(m) at client_lr(t); u = weighted mean of w - w_i; w -= server_lr(t) u."""
  history = []
  for t in range(ROUNDS):
    sums, updates, weights = Sums(), [], []
    for x, y in clients:
      vw, vb = w.copy(), b.copy()
      mw, mb = np.zeros_like(w), np.zeros_like(b)
      for xb, yb in batches_of(x, y):
        sums.add(vw, vb, xb, yb)
        gw, gb = gradient(vw, vb, xb, yb)
        mw, mb = momentum * mw + gw, momentum * mb + gb
        vw, vb = vw - client_lr(t) * mw, vb - client_lr(t) * mb
      updates.append((w - vw, b - vb))
      weights.append(weigh(len(x)))
    p = np.array(weights) / sum(weights)
    w = w - server_lr(t) * sum(pi * u[0] for pi, u in zip(p, updates))
    b = b - server_lr(t) * sum(pi * u[1] for pi, u in zip(p, updates))
    history.append((w.copy(), b.copy(), sums.metrics()))
  return history


def run_and_compare(process, datasets, reference):
  state = process.initialize()
  for w, b, metrics in reference:
    state, got = process.next(state, [d.batch(4) for d in datasets])
    assert_params(state, w, b)
    assert_metrics(got['client_work']['train'], metrics)
  return state


def test_client_and_server_learning_rates_follow_their_schedules_by_round():
  model, datasets = dense_model(), make_clients(SIZES)
  client_schedule = optax.exponential_decay(0.2, transition_steps=1, decay_rate=0.5)
  process = fl.learning.algorithms.build_weighted_fed_avg(
      model,
      client_optimizer_fn=lambda lr: fl.learning.optimizers.build_sgdm(lr, momentum=0.5),
      client_learning_rate_fn=client_schedule,
      server_optimizer_fn=fl.learning.optimizers.build_sgdm,
      server_learning_rate_fn=lambda t: 1.5 / (1.0 + t),
  )
  reference = reference_fed_avg(
      [d.elements for d in datasets], *initial_params(process),
      client_lr=lambda t: 0.2 * 0.5**t, server_lr=lambda t: 1.5 / (1.0 + t),
      weigh=float, momentum=0.5,
  )
  state = run_and_compare(process, datasets, reference)
  assert int(state.client_work.round_num) == ROUNDS
  assert int(state.finalizer.round_num) == ROUNDS


@pytest.mark.parametrize(
    'weighting,weigh',
    [
        (fl.learning.ClientWeighting.NUM_EXAMPLES, float),
        (fl.learning.ClientWeighting.UNIFORM, lambda n: 1.0),
        (lambda n: n**0.5, lambda n: n**0.5),
    ],
    ids=['num-examples', 'uniform', 'sqrt-function'],
)
def test_client_weighting(weighting, weigh):
  model, datasets = dense_model(), make_clients(SIZES)
  process = fl.learning.algorithms.build_weighted_fed_avg(
      model, fl.learning.optimizers.build_sgdm(0.1), client_weighting=weighting
  )
  reference = reference_fed_avg(
      [d.elements for d in datasets], *initial_params(process),
      client_lr=lambda t: 0.1, server_lr=lambda t: 1.0, weigh=weigh,
  )
  run_and_compare(process, datasets, reference)


def test_schedule_needs_an_optimizer_function():
  with pytest.raises(TypeError, match='learning_rate -> optimizer'):
    fl.learning.algorithms.build_weighted_fed_avg(
        dense_model(), fl.learning.optimizers.build_sgdm(0.1),
        client_learning_rate_fn=lambda t: 0.1,
    )
  with pytest.raises(TypeError, match='client_weighting'):
    fl.learning.algorithms.build_weighted_fed_avg(
        dense_model(), fl.learning.optimizers.build_sgdm(0.1), client_weighting='many'
    )
