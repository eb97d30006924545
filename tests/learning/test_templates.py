"""The four-part templates: composition, type checks at construction, fusion, replacing one part."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from learning_reference import BATCH, NUM_CLASSES, NUM_FEATURES, dense_model, make_clients

import fedjax_like as fl
from fedjax_like.aggregators import AggregationProcess, MeanFactory, MeasuredProcessOutput
from fedjax_like.core import (
    CLIENTS,
    SERVER,
    FederatedValue,
    cohort,
    federated_mean,
    federated_sum,
    federated_value,
)
from fedjax_like.core.engine import Runtime
from fedjax_like.data import pack_cohort
from fedjax_like.learning import templates

SIZES = [7, 13, 4, 10, 5, 9]  # six clients: a [6, 12, 5] array would be a stack of updates


def parts(model, aggregator=None, finalizer=None):
  weights_type = jax.eval_shape(model.init_fn, jax.random.key(0))
  return (
      lambda: model.init_fn(jax.random.key(0)),
      templates.build_broadcast_process(weights_type),
      templates.build_model_delta_client_work(model, fl.learning.optimizers.build_sgdm(0.1)),
      aggregator or MeanFactory(),
      finalizer or templates.build_apply_optimizer_finalizer(
          fl.learning.optimizers.build_sgdm(1.0), weights_type
      ),
  )


def cohort_data():
  return pack_cohort([d.batch(BATCH) for d in make_clients(SIZES)])


def intrinsics_mean(value_type):
  """A weighted mean written with plain intrinsics, NOT in map-reduce form: it still fuses."""

  def next_fn(state, value, weight):
    mean = federated_mean(value, weight)
    return MeasuredProcessOutput(state, mean, {'mean_weight': federated_sum(weight)})

  return AggregationProcess(lambda: (), next_fn, value_type, True, None, 'intrinsics_mean')


def stacking_mean(value_type):
  """A weighted mean that reads every client's update (as a median must): it stacks them."""

  def next_fn(state, value, weight):
    values, weights = value.value, weight.value
    total = jnp.sum(weights)
    mean = jax.tree.map(lambda v: jnp.tensordot(weights, v, 1) / total, values)
    return MeasuredProcessOutput(state, federated_value(mean, SERVER), {'mean_weight': total})

  return AggregationProcess(lambda: (), next_fn, value_type, True, None, 'stacking_mean')


def test_state_and_metrics_are_keyed_by_the_four_parts():
  process = templates.compose_learning_process(*parts(dense_model()))
  state = process.initialize()
  assert isinstance(state, fl.learning.LearningAlgorithmState)
  assert state._fields == (
      'global_model_weights', 'distributor', 'client_work', 'aggregator', 'finalizer'
  )
  state, metrics = process.next(state, cohort_data())
  assert set(metrics) == {'distributor', 'client_work', 'aggregator', 'finalizer'}
  assert set(metrics['client_work']['train']) == {'accuracy', 'loss', 'num_examples', 'num_batches'}
  assert int(metrics['client_work']['train']['num_examples']) == sum(SIZES)
  assert int(state.client_work.round_num) == 1


def test_mismatched_aggregator_fails_at_construction_naming_both_parts_and_types():
  model = dense_model()
  wrong = {'bias': jax.ShapeDtypeStruct((NUM_CLASSES,), jnp.float32),
           'kernel': jax.ShapeDtypeStruct((NUM_FEATURES + 1, NUM_CLASSES), jnp.float32)}
  initial, distributor, client_work, _, finalizer = parts(model)
  with pytest.raises(TypeError) as error:
    templates.compose_learning_process(
        initial, distributor, client_work, MeanFactory().create(wrong), finalizer
    )
  message = str(error.value)
  assert "client_work 'model_delta'" in message and "aggregator 'mean'" in message
  assert '<bias=float32[5],kernel=float32[12,5]>' in message
  assert '<bias=float32[5],kernel=float32[13,5]>' in message


def test_mismatched_finalizer_and_wrong_part_kind_fail_at_construction():
  model = dense_model()
  other = fl.models.from_linen(
      __import__('flax.linen', fromlist=['Dense']).Dense(3),
      (jax.ShapeDtypeStruct((NUM_FEATURES,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32)),
  )
  other_finalizer = templates.build_apply_optimizer_finalizer(
      fl.learning.optimizers.build_sgdm(1.0), jax.eval_shape(other.init_fn, jax.random.key(0))
  )
  initial, distributor, client_work, aggregator, _ = parts(model)
  with pytest.raises(TypeError, match=r"aggregator 'mean'.*\n.*\n.*finalizer 'apply_optimizer'"):
    templates.compose_learning_process(
        initial, distributor, client_work, aggregator, other_finalizer
    )
  with pytest.raises(TypeError, match='the finalizer must be a FinalizerProcess'):
    templates.compose_learning_process(initial, distributor, client_work, aggregator, 'sgd')
  with pytest.raises(TypeError, match='the aggregator must be an? AggregationProcess'):
    templates.compose_learning_process(initial, distributor, client_work, 0.5, other_finalizer)


@pytest.mark.parametrize('replaced', ['aggregator', 'client_work'])
def test_replacing_one_part_leaves_the_rest_and_the_result_unchanged(replaced):
  model = dense_model()
  data = cohort_data()
  fused = templates.compose_learning_process(*parts(model))
  initial, distributor, client_work, aggregator, finalizer = parts(model)
  if replaced == 'aggregator':  # a mean written with the intrinsics, not in map-reduce form
    weights_type = jax.eval_shape(model.init_fn, jax.random.key(0))
    aggregator = intrinsics_mean(weights_type.trainable)
  else:  # a client work given only by its TFF-shaped next
    client_work = client_work._replace(map_reduce=None, name='next_only')
  custom = templates.compose_learning_process(
      initial, distributor, client_work, aggregator, finalizer
  )
  s1, s2 = fused.initialize(), custom.initialize()
  for _ in range(2):
    s1, m1 = fused.next(s1, data)
    s2, m2 = custom.next(s2, data)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
      s1.global_model_weights, s2.global_model_weights,
  )
  jax.tree.map(np.testing.assert_allclose, m1['client_work'], m2['client_work'])
  np.testing.assert_allclose(m1['aggregator']['mean_weight'], m2['aggregator']['mean_weight'])


def jaxpr_shapes(jaxpr):
  """Every intermediate shape of a jaxpr, sub-jaxprs (scan and loop bodies) included."""
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      yield tuple(getattr(var.aval, 'shape', ()))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        inner = getattr(sub, 'jaxpr', sub)
        if hasattr(inner, 'eqns'):
          yield from jaxpr_shapes(inner)


def round_shapes(process, data):
  state = process.initialize()
  engine = Runtime('sequential').engine
  closed = jax.make_jaxpr(lambda s, b, m: process._round_fn(engine, s, (b, m)))(
      state, data.batches, data.mask
  )
  return set(jaxpr_shapes(closed.jaxpr))


def test_a_round_stacks_client_updates_only_for_an_aggregator_that_reads_them():
  model, data = dense_model(), cohort_data()
  stacked = (len(SIZES), NUM_FEATURES, NUM_CLASSES)
  weights_type = jax.eval_shape(model.init_fn, jax.random.key(0))
  fused = templates.compose_learning_process(*parts(model))
  assert stacked not in round_shapes(fused, data)
  # An aggregator written with plain intrinsics fuses into the round's one pass as well.
  plain = templates.compose_learning_process(
      *parts(model, aggregator=intrinsics_mean(weights_type.trainable))
  )
  assert stacked not in round_shapes(plain, data)
  # The check detects a stack: an aggregator that reads the client values gets them stacked.
  reading = templates.compose_learning_process(
      *parts(model, aggregator=stacking_mean(weights_type.trainable))
  )
  assert stacked in round_shapes(reading, data)
  assert reading.round_computation.last_scope.stacked_by == ("the aggregator 'stacking_mean'",)
  s1, s2 = fused.initialize(), reading.initialize()
  s1, _ = fused.next(s1, data)
  s2, _ = reading.next(s2, data)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               s1.global_model_weights, s2.global_model_weights)


def test_parts_compose_by_hand_as_in_tff():
  """The parts' own ``next`` functions, chained by hand, give the composed round's result."""
  model, data = dense_model(), cohort_data()
  initial, distributor, client_work, factory, finalizer = parts(model)
  aggregator = factory.create(client_work.update_type)
  process = templates.compose_learning_process(
      initial, distributor, client_work, aggregator, finalizer
  )
  state = process.initialize()

  @jax.jit
  def by_hand(state, batches, mask):
    weights = federated_value(state.global_model_weights, SERVER)
    sent = distributor.next(state.distributor, weights)
    data = FederatedValue((batches, mask), CLIENTS)
    work = client_work.next(state.client_work, sent.result, data)
    update = FederatedValue(work.result.value.update, CLIENTS)
    weight = FederatedValue(work.result.value.update_weight, CLIENTS)
    aggregated = aggregator.next(state.aggregator, update, weight)
    new_weights = finalizer.next(state.finalizer, weights, aggregated.result).result.value
    return new_weights, work.measurements

  weights, measurements = by_hand(state, data.batches, data.mask)
  composed, metrics = process.next(state, data)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
      weights, composed.global_model_weights,
  )
  jax.tree.map(np.testing.assert_allclose, measurements, metrics['client_work'])


def test_round_is_a_federated_computation_with_a_tff_style_signature():
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np

  import fedjax_like as fl
  from fedjax_like.data import Dataset

  spec = (jax.ShapeDtypeStruct((6,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
  process = fl.learning.algorithms.build_weighted_fed_avg(
      fl.models.from_linen(nn.Dense(3), spec), fl.learning.optimizers.build_sgdm(0.1)
  )
  rng = np.random.default_rng(0)
  clients = [
      Dataset((rng.normal(size=(5, 6)).astype(np.float32), np.zeros(5, np.int32))).batch(2)
      for _ in range(3)
  ]
  process.next(process.initialize(), clients)
  signature = str(process.next.type_signature)
  assert signature.startswith('(<server_state=<global_model_weights=<trainable=<bias=float32[3]')
  assert 'client_data={<<float32[3,2,6],int32[3,2]>,bool[3,2]>}@CLIENTS' in signature
  assert signature.endswith('update_non_finite=int32>>@SERVER>)')


def test_an_aggregator_with_client_state_keeps_it_per_client_across_rounds():
  from fedjax_like.aggregators import TopKSparsificationFactory

  model = dense_model()
  clients = [d.batch(BATCH) for d in make_clients(SIZES)]
  everything = templates.compose_learning_process(
      *parts(model, aggregator=TopKSparsificationFactory(MeanFactory(), fraction=1.0)))
  plain = templates.compose_learning_process(*parts(model))
  s1, s2 = everything.initialize(), plain.initialize()
  for _ in range(2):
    s1, _ = everything.next(s1, clients)
    s2, _ = plain.next(s2, clients)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               s1.global_model_weights, s2.global_model_weights)
  # A fraction sends part of each update; what is kept stays with its client, in the state.
  sparse = templates.compose_learning_process(
      *parts(model, aggregator=TopKSparsificationFactory(MeanFactory(), fraction=0.2)))
  state = sparse.initialize()
  state, _ = sparse.next(state, clients[:3])
  store = state.aggregator.clients
  assert sorted(store.client_ids) == ['client_0', 'client_1', 'client_2']
  residual = store.get('client_0')
  assert any(float(np.abs(x).max()) > 0 for x in jax.tree.leaves(residual))
  state, _ = sparse.next(state, clients[2:5])
  assert sorted(store.client_ids) == ['client_0', 'client_1', 'client_2']  # the old store kept
  assert len(state.aggregator.clients) == 5
