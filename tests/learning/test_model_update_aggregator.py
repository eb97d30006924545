"""robust_aggregator and dp_aggregator inside FedAvg, against a NumPy reference of the round."""

import math

import jax
import numpy as np
import pytest
from learning_reference import (
    BATCH,
    batches_of,
    dense_model,
    gradient,
    initial_params,
    make_clients,
)

import fedjax_like as fl
from fedjax_like.data import Dataset

SIZES = [6, 9, 5, 8, 7]
CORRUPTED = 3  # this client's features are scaled by 1000: its update is zeroed
LR, ROUNDS = 0.5, 5


def clients():
  datasets = make_clients(SIZES, seed=3)
  x, y = datasets[CORRUPTED].elements
  datasets[CORRUPTED] = Dataset((x * 1000.0, y), client_id=f'client_{CORRUPTED}')
  return datasets


def reference_robust_fed_avg(data, w, b, rounds, lr, weighted=True):
  """FedAvg with TFF's robust aggregator in float64: zeroing (L-inf, 2 Cz + 1), clipping (L2)."""
  cz, cc, history = 10.0, 1.0, []
  for _ in range(rounds):
    deltas, weights = [], []
    for x, y in data:
      cw, cb = w.copy(), b.copy()
      for xb, yb in batches_of(x, y):
        gw, gb = gradient(cw, cb, xb, yb)
        cw, cb = cw - lr * gw, cb - lr * gb
      deltas.append(np.concatenate([(w - cw).ravel(), (b - cb).ravel()]))
      weights.append(float(len(x)) if weighted else 1.0)
    d, n = np.array(deltas), np.array(weights)
    linf = np.abs(d).max(axis=1)
    zero_threshold = 2 * cz + 1
    zeroed = linf > zero_threshold
    d[zeroed] = 0.0
    cz *= math.exp(-math.log(10.0) * (np.mean(linf <= cz) - 0.98))
    l2 = np.linalg.norm(d, axis=1)
    clipped = l2 > cc
    d = d * np.where(clipped, cc / np.where(l2 > 0, l2, 1.0), 1.0)[:, None]
    clip_used = cc
    cc *= math.exp(-0.2 * (np.mean(l2 <= cc) - 0.8))
    mean = (n[:, None] * d).sum(0) / n.sum()
    w = w - mean[: w.size].reshape(w.shape)
    b = b - mean[w.size :]
    history.append(dict(w=w, b=b, zeroed=int(zeroed.sum()), zeroing_norm=zero_threshold,
                        clipped=int(clipped.sum()), clipping_norm=clip_used, weight=n.sum()))
  return history


def test_robust_aggregator_in_weighted_fed_avg_matches_numpy():
  datasets = clients()
  process = fl.learning.algorithms.build_weighted_fed_avg(
      dense_model(), fl.learning.optimizers.build_sgdm(LR),
      model_aggregator=fl.learning.robust_aggregator(),
  )
  w0, b0 = initial_params(process)
  reference = reference_robust_fed_avg([d.elements for d in datasets], w0, b0, ROUNDS, LR)
  assert sum(r['zeroed'] for r in reference) >= ROUNDS  # the corrupted client, every round
  assert 0 < sum(r['clipped'] for r in reference)
  state = process.initialize()
  batched = [d.batch(BATCH) for d in datasets]
  for want in reference:
    state, metrics = process.next(state, batched)
    agg = metrics['aggregator']
    assert set(agg) == {'zeroing', 'zeroing_norm', 'zeroed_count'}
    assert set(agg['zeroing']) == {'clipping', 'clipping_norm', 'clipped_count'}
    assert set(agg['zeroing']['clipping']) == {'mean_weight', 'num_clients_non_finite'}
    assert int(agg['zeroed_count']) == want['zeroed']
    np.testing.assert_allclose(agg['zeroing_norm'], want['zeroing_norm'], rtol=1e-5)
    assert int(agg['zeroing']['clipped_count']) == want['clipped']
    np.testing.assert_allclose(agg['zeroing']['clipping_norm'], want['clipping_norm'], rtol=1e-5)
    np.testing.assert_allclose(agg['zeroing']['clipping']['mean_weight'], want['weight'])
    params = state.global_model_weights.trainable
    np.testing.assert_allclose(params['kernel'], want['w'], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(params['bias'], want['b'], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('zeroing,clipping', [(True, False), (False, True), (False, False)])
def test_robust_aggregator_switches(zeroing, clipping):
  factory = fl.learning.robust_aggregator(zeroing=zeroing, clipping=clipping, weighted=False)
  assert not factory.is_weighted
  value_type = {'x': jax.ShapeDtypeStruct((3,), np.float32)}
  process = factory.create(value_type)
  assert process.map_reduce is not None  # a sum: fused into the round
  keys = set(process.initialize())
  if zeroing:
    assert keys == {'zeroing_norm', 'inner_agg', 'zeroed_count_agg'}
  elif clipping:
    assert keys == {'clipping_norm', 'inner_agg', 'clipped_count_agg'}
  else:
    assert repr(factory) == 'UnweightedMeanFactory()'


def test_debug_measurements_fn_must_keep_the_weightedness():
  with pytest.raises(TypeError, match='debug_measurements_fn should return the same type'):
    fl.learning.robust_aggregator(debug_measurements_fn=lambda f: fl.aggregators.SumFactory())


def test_dp_aggregator_in_unweighted_fed_avg_is_reproducible_and_nested_as_tff():
  datasets = make_clients(SIZES, seed=4)
  batched = [d.batch(BATCH) for d in datasets]

  def run(seed):
    process = fl.learning.algorithms.build_unweighted_fed_avg(
        dense_model(), fl.learning.optimizers.build_sgdm(0.1),
        model_aggregator=fl.learning.dp_aggregator(0.2, len(SIZES), seed=seed),
    )
    state, out = process.initialize(), []
    for _ in range(3):
      state, metrics = process.next(state, batched)
      out.append((np.asarray(state.global_model_weights.trainable['kernel']),
                  jax.tree.map(np.asarray, metrics['aggregator'])))
    return out

  first, again, other = run(1), run(1), run(2)
  agg = first[-1][1]
  assert set(agg) == {'zeroing', 'zeroing_norm', 'zeroed_count'}
  assert set(agg['zeroing']) == {'dp_query_metrics', 'dp'}
  assert set(agg['zeroing']['dp_query_metrics']) == {'clip'}
  for (k1, m1), (k2, m2) in zip(first, again):
    np.testing.assert_array_equal(k1, k2)
    jax.tree.map(np.testing.assert_array_equal, m1, m2)
  assert not np.array_equal(first[0][0], other[0][0])


def test_dp_aggregator_refuses_a_noise_multiplier_its_count_noise_cannot_carry():
  with pytest.raises(ValueError, match='too low to achieve the desired effective noise_multiplier'):
    fl.learning.dp_aggregator(1.0, 10)


def test_secure_aggregator_in_weighted_fed_avg_agrees_with_the_robust_one():
  datasets = clients()
  batched = [d.batch(BATCH) for d in datasets]
  results = []
  for factory in (fl.learning.robust_aggregator(), fl.learning.secure_aggregator()):
    process = fl.learning.algorithms.build_weighted_fed_avg(
        dense_model(), fl.learning.optimizers.build_sgdm(LR), model_aggregator=factory)
    state = process.initialize()
    for _ in range(3):
      state, metrics = process.next(state, batched)
    results.append((state.global_model_weights.trainable, metrics['aggregator']))
  (robust, robust_agg), (secure, secure_agg) = results
  # The secure sums quantize to 32 bits over +-100 (values) and [0, 2**20 - 1] (weights).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4), secure, robust)
  mean = secure_agg['zeroing']['clipping']
  assert set(mean) == {'mean_value', 'mean_weight', 'num_clients_non_finite'}
  assert set(mean['mean_value']) == {'secure_upper_clipped_count', 'secure_lower_clipped_count',
                                     'secure_upper_threshold', 'secure_lower_threshold'}
  assert int(secure_agg['zeroed_count']) == int(robust_agg['zeroed_count']) == 1
  assert int(secure_agg['zeroing']['clipped_count']) == int(robust_agg['zeroing']['clipped_count'])


@pytest.mark.parametrize('make,build', [
    (fl.learning.robust_aggregator, fl.learning.algorithms.build_weighted_fed_avg),
    (lambda: fl.learning.dp_aggregator(0.2, len(SIZES), seed=5),
     fl.learning.algorithms.build_unweighted_fed_avg),
    (lambda: fl.learning.compression_aggregator(seed=5),
     fl.learning.algorithms.build_weighted_fed_avg),
    (lambda: fl.aggregators.KrumFactory(1, num_selected=2),
     fl.learning.algorithms.build_unweighted_fed_avg),
], ids=['robust', 'dp', 'compression', 'multi_krum'])
def test_every_execution_strategy_gives_the_same_rounds(make, build):
  from fedjax_like.core import cohort  # noqa: PLC0415

  batched = [d.batch(BATCH) for d in clients()]

  def run_with(strategy, chunk_size=None):
    with cohort.execution(strategy, chunk_size=chunk_size):
      process = build(dense_model(), fl.learning.optimizers.build_sgdm(LR), model_aggregator=make())
      state, out = process.initialize(), []
      for _ in range(2):
        state, metrics = process.next(state, batched)
        out.append((state.global_model_weights.trainable, metrics['aggregator']))
      return jax.tree.map(np.asarray, out)

  baseline = run_with('sequential')
  for strategy, chunk in (('chunked', 2), ('vmap', None)):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 run_with(strategy, chunk), baseline)


def test_compression_aggregator_below_the_threshold_is_the_robust_one_in_fed_avg():
  # The dense model's tensors are far below 20,000 elements: nothing is quantized, so FedAvg with
  # TFF's compression aggregator follows the robust reference, through the intrinsics path.
  datasets = clients()
  process = fl.learning.algorithms.build_weighted_fed_avg(
      dense_model(), fl.learning.optimizers.build_sgdm(LR),
      model_aggregator=fl.learning.compression_aggregator(seed=0),
  )
  w0, b0 = initial_params(process)
  reference = reference_robust_fed_avg([d.elements for d in datasets], w0, b0, 2, LR)
  state, batched = process.initialize(), [d.batch(BATCH) for d in datasets]
  for want in reference:
    state, metrics = process.next(state, batched)
    agg = metrics['aggregator']
    assert int(agg['zeroed_count']) == want['zeroed']
    mean = agg['zeroing']['clipping']
    assert set(mean) == {'mean_value', 'mean_weight', 'num_clients_non_finite'}
    assert float(mean['mean_value']['compression_ratio']) == 1.0
    params = state.global_model_weights.trainable
    np.testing.assert_allclose(params['kernel'], want['w'], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(params['bias'], want['b'], rtol=1e-4, atol=1e-5)


def test_compression_aggregator_quantizes_large_tensors_to_8_bits_within_their_step():
  from fedjax_like.core import CLIENTS, FederatedValue  # noqa: PLC0415

  rng = np.random.default_rng(0)
  n, big = 4, 20001
  values = {'big': rng.normal(scale=0.01, size=(n, big)).astype(np.float32),
            'small': rng.normal(scale=0.01, size=(n, 7)).astype(np.float32)}
  weights = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
  factory = fl.learning.compression_aggregator(zeroing=False, clipping=False, seed=3)
  process = factory.create(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype),
                                        values))
  @jax.jit
  def step(state, v, w):
    out = process.next(state, FederatedValue(v, CLIENTS), FederatedValue(w, CLIENTS))
    return out.result.value, out.measurements

  result, measured = jax.tree.map(np.asarray, step(process.initialize(), values, weights))
  weighted = values['big'] * weights[:, None]
  exact = weighted.sum(0) / weights.sum()
  # Each client's w_i x_i is off by less than one step of its own 8-bit grid, per coordinate.
  steps = (weighted.max(1) - weighted.min(1)) / 255
  assert np.all(np.abs(result['big'] - exact) <= steps.sum() / weights.sum() * (1 + 1e-4))
  assert np.abs(result['big'] - exact).max() > 0  # really quantized
  np.testing.assert_allclose(result['small'], (values['small'] * weights[:, None]).sum(0) / 10,
                             rtol=1e-5)
  assert float(measured['mean_value']['bits_per_client']) == 8 * big + 64 + 32 * 7
  assert float(measured['mean_value']['compression_ratio']) > 3.9


def test_compression_aggregator_refuses_unknown_keywords():
  with pytest.raises(TypeError, match='unknown arguments'):
    fl.learning.compression_aggregator(bits=4)
@pytest.mark.parametrize('build', [
    lambda m, opt, agg: fl.learning.algorithms.build_weighted_fed_avg(m, opt, model_aggregator=agg),
    lambda m, opt, agg: fl.learning.algorithms.build_weighted_fed_prox(
        m, 0.1, opt, model_aggregator=agg),
    lambda m, opt, agg: fl.learning.algorithms.build_fed_adam(m, opt, model_aggregator=agg),
    lambda m, opt, agg: fl.learning.algorithms.build_fed_sgd(m, model_aggregator=agg),
    lambda m, opt, agg: fl.learning.algorithms.build_weighted_mime_lite(
        m, opt, model_aggregator=agg),
    lambda m, opt, agg: fl.learning.algorithms.build_scaffold(
        m, 0.1, 10, client_weighting=fl.learning.ClientWeighting.NUM_EXAMPLES,
        model_aggregator=agg),
], ids=['fed_avg', 'fed_prox', 'fed_adam', 'fed_sgd', 'mime_lite', 'scaffold'])
def test_every_weighted_builder_refuses_the_dp_aggregator_and_names_the_unweighted_one(build):
  agg = fl.learning.dp_aggregator(0.5, 10, seed=0)
  with pytest.raises(TypeError, match=r'weights its clients .* is unweighted\. Use the unweighted '
                                      r'builder'):
    build(dense_model(), fl.learning.optimizers.build_sgdm(0.1), agg)


def test_clip_must_be_positive_wherever_it_is_given():
  factory = fl.aggregators.DifferentiallyPrivateFactory
  for bad in (0.0, -1.0):
    with pytest.raises(ValueError, match='clip must be positive'):
      factory.gaussian_fixed(1.0, 10, bad)
    with pytest.raises(ValueError, match='initial_l2_norm_clip must be positive'):
      factory.gaussian_adaptive(0.5, 10, initial_l2_norm_clip=bad)
    with pytest.raises(ValueError, match='clipping_norm must be positive'):
      fl.aggregators.clipping_factory(bad, fl.aggregators.MeanFactory())
