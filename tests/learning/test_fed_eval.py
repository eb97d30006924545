"""Federated evaluation and personalization evaluation against NumPy references."""

import jax
import numpy as np
import pytest
from learning_reference import (
    BATCH,
    Sums,
    assert_metrics,
    batches_of,
    dense_model,
    gradient,
    make_clients,
    params_of,
)

import fedjax_like as fl
from fedjax_like.data import pack_cohort


def trained_weights(model, datasets):
  sgd = fl.learning.optimizers.build_sgdm(0.1)
  trainer = fl.learning.algorithms.build_weighted_fed_avg(model, sgd)
  state, _ = trainer.next(trainer.initialize(), [d.batch(BATCH) for d in datasets])
  return trainer.get_model_weights(state)


def pooled_metrics(w, b, datasets):
  sums = Sums()
  for d in datasets:
    for xb, yb in batches_of(*d.elements):
      sums.add(w, b, xb, yb)
  return sums.metrics()


def test_fed_eval_sums_then_divides_once_and_keeps_running_totals():
  model = dense_model()
  first, second = make_clients([7, 13, 4], seed=1), make_clients([10, 5], seed=2, prefix='other')
  weights = trained_weights(model, make_clients([6, 9]))
  evaluation = fl.learning.algorithms.build_fed_eval(model)
  state = evaluation.set_model_weights(evaluation.initialize(), weights)
  w, b = (np.asarray(weights.trainable[k], np.float64) for k in ('kernel', 'bias'))

  state, metrics = evaluation.next(state, [d.batch(BATCH) for d in first])
  eval_metrics = metrics['client_work']['eval']
  assert_metrics(eval_metrics['current_round_metrics'], pooled_metrics(w, b, first))
  # A differently padded cohort (larger batches, extra steps) gives the same numbers.
  state, metrics = evaluation.next(state, pack_cohort([d.batch(3) for d in second], num_steps=9))
  eval_metrics = metrics['client_work']['eval']
  assert_metrics(eval_metrics['current_round_metrics'], pooled_metrics(w, b, second))
  assert_metrics(eval_metrics['total_rounds_metrics'], pooled_metrics(w, b, first + second))
  assert set(metrics) == {'distributor', 'client_work', 'aggregator', 'finalizer'}
  unchanged = (w.astype(np.float32), b.astype(np.float32))
  jax.tree.map(np.testing.assert_array_equal, params_of(state), unchanged)


def test_personalization_eval_reports_before_and_after_k_local_steps():
  model, k, lr = dense_model(), 5, 0.2
  train = make_clients([7, 13, 4], seed=3)  # 2, 4 and 1 batches: 5 steps cycle through them
  test = make_clients([6, 5, 9], seed=4)
  weights = trained_weights(model, make_clients([6, 9]))
  w0, b0 = (np.asarray(weights.trainable[n], np.float64) for n in ('kernel', 'bias'))
  evaluate = fl.learning.algorithms.build_personalization_eval(
      model, fl.learning.optimizers.build_sgdm(lr), num_finetune_steps=k
  )
  got = evaluate(weights, [d.batch(BATCH) for d in train], [d.batch(BATCH) for d in test])

  before_all, after_all = Sums(), Sums()
  for i, (tr, te) in enumerate(zip(train, test)):
    w, b = w0.copy(), b0.copy()
    train_batches = batches_of(*tr.elements)
    for step in range(k):
      xb, yb = train_batches[step % len(train_batches)]
      gw, gb = gradient(w, b, xb, yb)
      w, b = w - lr * gw, b - lr * gb
    before, after = Sums(), Sums()
    for xb, yb in batches_of(*te.elements):
      for sums in (before, before_all):
        sums.add(w0, b0, xb, yb)
      for sums in (after, after_all):
        sums.add(w, b, xb, yb)
    for key, ref in (('baseline_metrics', before), ('personalized_metrics', after)):
      per_client = {name: values[i] for name, values in got['per_client'][key].items()}
      assert_metrics(per_client, ref.metrics())
  assert_metrics(got['baseline_metrics'], before_all.metrics())
  assert_metrics(got['personalized_metrics'], after_all.metrics())
  assert got['per_client']['client_ids'] == ('client_0', 'client_1', 'client_2')


def test_personalization_eval_needs_the_same_clients_in_train_and_test():
  model = dense_model()
  evaluate = fl.learning.algorithms.build_personalization_eval(
      model, fl.learning.optimizers.build_sgdm(0.1), num_finetune_steps=2
  )
  weights = model.init_fn(jax.random.key(0))
  train = [d.batch(BATCH) for d in make_clients([5, 6])]
  test = [d.batch(BATCH) for d in make_clients([5, 6], prefix='other')]
  with pytest.raises(ValueError, match='same clients'):
    evaluate(weights, train, test)


def test_fed_eval_keeps_running_totals_of_metrics_with_their_own_denominator():
  """Per-token accuracy over two rounds of ragged clients is correct tokens / real tokens of all
  of them (pad targets and padding rows count nowhere), as a NumPy loop over the tokens says."""
  import flax.linen as nn
  import jax.numpy as jnp

  from fedjax_like.models import metrics

  class Tagger(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(6)(nn.Embed(6, 3)(x))

  spec = (jax.ShapeDtypeStruct((4,), jnp.int32), jax.ShapeDtypeStruct((4,), jnp.int32))
  model = fl.models.from_linen(
      Tagger(), spec, loss_fn=metrics.masked_sequence_cross_entropy('targets'),
      metric_fns={'accuracy': metrics.masked_categorical_accuracy([0])})
  rng = np.random.default_rng(5)

  def client(n):
    x = rng.integers(1, 6, size=(n, 4)).astype(np.int32)
    y = rng.integers(1, 6, size=(n, 4)).astype(np.int32)
    for row, length in zip(y, rng.integers(1, 5, size=n), strict=True):
      row[length:] = 0
    return x, y

  rounds = [[client(3), client(7)], [client(5)]]
  evaluation = fl.learning.algorithms.build_fed_eval(model)
  state = evaluation.initialize()
  weights = evaluation.get_model_weights(state)
  correct = counted = 0
  for cohort in rounds:
    state, out = evaluation.next(state, [fl.data.Dataset(c).batch(2) for c in cohort])
    for x, y in cohort:
      logits = np.asarray(model.apply_fn(weights, jnp.asarray(x), None, False))
      correct += np.sum((logits.argmax(-1) == y) & (y != 0))
      counted += np.sum(y != 0)
  total = out['client_work']['eval']['total_rounds_metrics']
  np.testing.assert_allclose(total['accuracy'], correct / counted, rtol=1e-6)
  assert int(total['num_examples']) == 15
