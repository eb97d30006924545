"""The mean aggregators against NumPy: weighted, unweighted, non-finite clients, types, fusion."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_like.aggregators import MeanFactory, UnweightedMeanFactory, tensor_type
from fedjax_like.core import CLIENTS, FederatedValue, cohort, federated_map

RNG = np.random.default_rng(0)
VALUES = {
    'a': RNG.normal(size=(5, 3)).astype(np.float32),
    'b': RNG.normal(size=(5,)).astype(np.float32),
}
WEIGHTS = np.array([1.0, 4.0, 0.0, 2.5, 3.0], np.float32)
VALUE_TYPE = tensor_type(jax.tree.map(lambda x: x[0], VALUES))


def run(process, values, weights=None):
  @jax.jit
  def aggregate(values, weights):
    state = process.initialize()
    w = None if weights is None else FederatedValue(weights, CLIENTS)
    out = process.next(state, FederatedValue(values, CLIENTS), w)
    return out.result.value, out.measurements

  return aggregate(values, weights)


@pytest.mark.parametrize('strategy', ['vmap', 'sequential', 'chunked'])
def test_weighted_mean_matches_numpy(strategy):
  process = MeanFactory().create(VALUE_TYPE)
  with cohort.execution(strategy, chunk_size=2):
    mean, measurements = run(process, VALUES, WEIGHTS)
  for key, x in VALUES.items():
    expected = np.tensordot(WEIGHTS.astype(np.float64), x, axes=1) / WEIGHTS.sum()
    np.testing.assert_allclose(mean[key], expected, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(measurements['mean_weight'], WEIGHTS.sum())
  assert int(measurements['num_clients_non_finite']) == 0


def test_unweighted_mean_matches_numpy():
  process = UnweightedMeanFactory().create(VALUE_TYPE)
  assert not process.is_weighted
  mean, measurements = run(process, VALUES)
  for key, x in VALUES.items():
    np.testing.assert_allclose(mean[key], x.mean(axis=0), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(measurements['mean_weight'], 5.0)


def test_non_finite_clients_get_weight_zero_and_are_counted():
  values = jax.tree.map(np.copy, VALUES)
  values['a'][1, 2] = np.nan
  values['b'][3] = np.inf
  mean, measurements = run(MeanFactory().create(VALUE_TYPE), values, WEIGHTS)
  keep = np.array([1, 0, 1, 0, 1], bool)
  for key, x in VALUES.items():
    w = WEIGHTS * keep
    expected = np.tensordot(w, x, axes=1) / w.sum()
    np.testing.assert_allclose(mean[key], expected, rtol=1e-6, atol=1e-6)
  assert int(measurements['num_clients_non_finite']) == 2
  np.testing.assert_allclose(measurements['mean_weight'], (WEIGHTS * keep).sum())


def test_all_zero_weights_give_zero():
  mean, _ = run(MeanFactory().create(VALUE_TYPE), VALUES, np.zeros(5, np.float32))
  jax.tree.map(lambda m: np.testing.assert_array_equal(m, np.zeros_like(m)), mean)


def test_wrong_value_type_and_missing_weights_are_type_errors():
  process = MeanFactory().create({'a': jax.ShapeDtypeStruct((4,), jnp.float32)})
  with pytest.raises(TypeError, match=r"'mean' was created for values of type <a=float32\[4\]>"):
    run(process, {'a': VALUES['a']}, WEIGHTS)
  with pytest.raises(TypeError, match='needs weights'):
    run(MeanFactory().create(VALUE_TYPE), VALUES)


def test_next_reduces_a_deferred_client_value_in_one_fused_pass():
  # The mean of a federated_map's output: the map runs inside the reduction, nothing is stacked.
  process = MeanFactory().create(VALUE_TYPE)

  def shapes(values, weights):
    values = FederatedValue(values, CLIENTS)
    doubled = federated_map(lambda v: jax.tree.map(lambda x: 2 * x, v), values)
    return process.next((), doubled, FederatedValue(weights, CLIENTS)).result.value

  with cohort.execution('sequential'):
    jaxpr = jax.make_jaxpr(shapes)(VALUES, WEIGHTS)
    mean = jax.jit(shapes)(VALUES, WEIGHTS)
  top_level = {tuple(v.aval.shape) for eqn in jaxpr.jaxpr.eqns for v in eqn.outvars}
  assert (5, 3) not in top_level  # no stacked [clients, ...] copy of the doubled values
  np.testing.assert_allclose(
      mean['a'], 2 * np.tensordot(WEIGHTS, VALUES['a'], axes=1) / WEIGHTS.sum(), rtol=1e-6
  )


def test_inner_sum_factories_compose_as_tff():
  from fedjax_like.aggregators import SecureSumFactory, SumFactory  # noqa: PLC0415

  values = jax.tree.map(np.copy, VALUES)
  values['a'][1, 0] = np.nan  # dropped with weight 0, as by the default mean
  plain = MeanFactory(value_sum_factory=SumFactory(), weight_sum_factory=SumFactory())
  process = plain.create(VALUE_TYPE)
  assert set(process.initialize()) == {'value_sum_process', 'weight_sum_process'}
  mean, measurements = run(process, values, WEIGHTS)
  default_mean, default_measurements = run(MeanFactory().create(VALUE_TYPE), values, WEIGHTS)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), mean, default_mean)
  assert measurements['mean_value'] == () and measurements['mean_weight'] == ()
  assert int(measurements['num_clients_non_finite']) == 1
  secure = MeanFactory(SecureSumFactory(10.0), SecureSumFactory(100.0, 0.0)).create(VALUE_TYPE)
  secure_mean, secure_measurements = run(secure, values, WEIGHTS)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), secure_mean, default_mean)
  assert set(secure_measurements['mean_value']) == {
      'secure_upper_clipped_count', 'secure_lower_clipped_count', 'secure_upper_threshold',
      'secure_lower_threshold'}
  count = UnweightedMeanFactory(count_sum_factory=SecureSumFactory(1, 0)).create(VALUE_TYPE)
  unweighted, unweighted_measurements = run(count, values)
  keep = np.array([1, 0, 1, 1, 1], bool)
  for key, x in VALUES.items():
    np.testing.assert_allclose(unweighted[key], x[keep].mean(axis=0), rtol=1e-6)
  assert 'mean_count' in unweighted_measurements


def test_inner_sum_factories_must_be_unweighted():
  with pytest.raises(TypeError, match='value_sum_factory must be an unweighted'):
    MeanFactory(value_sum_factory=MeanFactory())
