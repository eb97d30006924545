"""DifferentiallyPrivateFactory against NumPy: clipped sums over E, noise std, adaptive clip."""

import math
import warnings

import jax
import numpy as np
import pytest
from aggregator_helpers import run_rounds, value_type_of

from fedjax_like.aggregators import DifferentiallyPrivateFactory, adaptive_clip_noise_params

RNG = np.random.default_rng(0)
NUM_CLIENTS = 7
SCALES = np.array([0.05, 0.2, 0.4, 1.0, 0.1, 0.6, 0.02], np.float32)
VALUES = {
    'w': (RNG.normal(size=(NUM_CLIENTS, 5, 2)) * SCALES[:, None, None]).astype(np.float32),
    'b': (RNG.normal(size=(NUM_CLIENTS, 2)) * SCALES[:, None]).astype(np.float32),
}
VALUE_TYPE = value_type_of(VALUES)


def flat(values):
  leaves = jax.tree.leaves(values)
  return np.concatenate([np.asarray(x, np.float64).reshape(len(x), -1) for x in leaves], axis=1)


def flat_one(value):
  return flat(jax.tree.map(lambda x: np.asarray(x)[None], value))[0]


def np_clip(rows, clip):
  norms = np.linalg.norm(rows, axis=1)
  return rows * (clip / np.maximum(norms, clip))[:, None], norms


def test_gaussian_fixed_without_noise_divides_the_clipped_sum_by_clients_per_round():
  clip, e = 1.0, 10.0  # E is not the realized count (7)
  process = DifferentiallyPrivateFactory.gaussian_fixed(0.0, e, clip, seed=0).create(VALUE_TYPE)
  assert not process.is_weighted and process.map_reduce is not None
  (result,), (measured,), _ = run_rounds(process, [VALUES])
  clipped, norms = np_clip(flat(VALUES), clip)
  assert 0 < (norms > clip).sum() < NUM_CLIENTS
  np.testing.assert_allclose(flat_one(result), clipped.sum(0) / e, rtol=1e-5, atol=1e-7)
  assert measured == {'dp_query_metrics': {}, 'dp': ()}


def zero_values(num_clients, coordinates):
  return {'a': np.zeros((num_clients, coordinates // 2), np.float32),
          'b': np.zeros((num_clients, coordinates - coordinates // 2), np.float32)}


def assert_gaussian(samples, sigma):
  """Mean 0 and std ``sigma``: both z-scores under 4, and the 1-sigma mass within 4 std errors."""
  n = samples.size
  assert abs(samples.mean()) < 4 * sigma / math.sqrt(n)
  chi2 = ((samples / sigma) ** 2).sum()  # chi-square with n degrees of freedom
  assert abs(chi2 - n) / math.sqrt(2 * n) < 4, (np.std(samples), sigma)
  p = 0.6826894921370859  # P(|N(0,1)| < 1)
  inside = np.mean(np.abs(samples) < sigma)
  assert abs(inside - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_gaussian_fixed_noise_has_std_z_clip_over_e():
  # A zero update over 40000 coordinates: the result is pure noise with std z C / E; fixed seed,
  # tolerance 4 standard errors (the chi-square statistic, the mean and the 1-sigma mass).
  z, e, clip = 1.3, 8.0, 0.5
  process = DifferentiallyPrivateFactory.gaussian_fixed(z, e, clip, seed=3).create(
      value_type_of(zero_values(4, 40000))
  )
  results, _, _ = run_rounds(process, [zero_values(4, 40000)] * 2)
  first, second = (flat_one(r) for r in results)
  assert_gaussian(first, z * clip / e)
  assert_gaussian(second, z * clip / e)
  assert abs(np.corrcoef(first, second)[0, 1]) < 4 / math.sqrt(first.size)  # fresh noise a round


def test_noise_is_reproducible_from_the_seed_and_resumes_bit_exactly():
  make = lambda seed: DifferentiallyPrivateFactory.gaussian_adaptive(  # noqa: E731
      0.5, 10.0, seed=seed).create(VALUE_TYPE)
  rounds = [jax.tree.map(lambda x: x * (1 + i), VALUES) for i in range(4)]
  a, ma, _ = run_rounds(make(11), rounds)
  b, mb, _ = run_rounds(make(11), rounds)
  c, _, _ = run_rounds(make(12), rounds)
  jax.tree.map(np.testing.assert_array_equal, (a, ma), (b, mb))
  assert not np.array_equal(flat_one(a[0]), flat_one(c[0]))
  first, _, mid = run_rounds(make(11), rounds[:2])
  rest, _, _ = run_rounds(make(11), rounds[2:], state=mid)
  jax.tree.map(np.testing.assert_array_equal, first + rest, a)


@pytest.mark.parametrize(
    'z,e,count_stddev', [(1.0, 100.0, None), (0.8, 30.0, 2.0), (0.0, 10.0, None)]
)
def test_adaptive_noise_split_matches_tff_formula(z, e, count_stddev):
  value_z, s_b = adaptive_clip_noise_params(z, e, count_stddev)
  want_s_b = (0.05 * e if z > 0 else 0.0) if count_stddev is None else count_stddev
  assert s_b == pytest.approx(want_s_b)
  want_z = 0.0 if z == 0 else (z**-2 - (2 * want_s_b) ** -2) ** -0.5
  assert value_z == pytest.approx(want_z)
  factory = DifferentiallyPrivateFactory.gaussian_adaptive(z, e, clipped_count_stddev=count_stddev)
  assert factory.value_noise_multiplier == pytest.approx(want_z)


def test_gaussian_adaptive_noise_has_std_z_v_clip_over_e():
  z, e, c0 = 1.0, 100.0, 0.3
  factory = DifferentiallyPrivateFactory.gaussian_adaptive(z, e, initial_l2_norm_clip=c0, seed=5)
  values = zero_values(3, 40000)
  (result,), (measured,), _ = run_rounds(factory.create(value_type_of(values)), [values])
  value_z = (z**-2 - (2 * 0.05 * e) ** -2) ** -0.5
  assert_gaussian(flat_one(result), value_z * c0 / e)
  assert set(measured) == {'dp_query_metrics', 'dp'} and measured['dp'] == ()


def test_gaussian_adaptive_clip_follows_the_reference_without_noise():
  # z = 0: no noise anywhere (s_b = 0), and b divides by E, not by the realized count.
  e, c0, q, lr = 9.0, 0.1, 0.5, 0.2
  process = DifferentiallyPrivateFactory.gaussian_adaptive(
      0.0, e, initial_l2_norm_clip=c0, target_unclipped_quantile=q, learning_rate=lr
  ).create(VALUE_TYPE)
  rounds = [jax.tree.map(lambda x, i=i: x * (0.5 + 0.3 * i), VALUES) for i in range(8)]
  results, measured, _ = run_rounds(process, rounds)
  clip = c0
  for values, result, m in zip(rounds, results, measured):
    clipped, norms = np_clip(flat(values), clip)
    np.testing.assert_allclose(flat_one(result), clipped.sum(0) / e, rtol=1e-5, atol=1e-7)
    b = min(1.0, max(0.0, ((norms <= clip) - 0.5).sum() / e + 0.5))
    clip = clip * math.exp(-lr * (b - q))
    np.testing.assert_allclose(m['dp_query_metrics']['clip'], clip, rtol=1e-5)  # the NEXT clip


def test_non_finite_values_are_zeroed():
  values = jax.tree.map(np.copy, VALUES)
  values['w'][2, 0, 0] = np.nan
  process = DifferentiallyPrivateFactory.gaussian_fixed(0.0, 7.0, 0.5).create(VALUE_TYPE)
  (result,), _, _ = run_rounds(process, [values])
  rows = flat(VALUES)
  rows[2] = 0.0
  np.testing.assert_allclose(flat_one(result), np_clip(rows, 0.5)[0].sum(0) / 7.0, rtol=1e-5,
                             atol=1e-7)


# ----- bad input -------------------------------------------------------------------------------


def test_noise_multiplier_too_large_for_the_count_noise_is_refused_with_the_fix():
  # E = 10: s_b = 0.5, so z must be below 1.
  with pytest.raises(ValueError, match=r'clipped_count_stddev = 0.5 .* too low .* Increase '
                                       r'clipped_count_stddev .* or decrease noise_multiplier'):
    DifferentiallyPrivateFactory.gaussian_adaptive(1.0, 10.0)
  DifferentiallyPrivateFactory.gaussian_adaptive(1.0, 10.0, clipped_count_stddev=0.6)  # fits


def test_much_value_noise_warns():
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    DifferentiallyPrivateFactory.gaussian_adaptive(0.9, 10.0)  # z_v / z about 2.3
  assert any('significant amount of noise' in str(w.message) for w in caught)


@pytest.mark.parametrize('build,message', [
    (lambda: DifferentiallyPrivateFactory.gaussian_fixed(1.0, 10.0, 0.0), 'clip must be positive'),
    (lambda: DifferentiallyPrivateFactory.gaussian_fixed(1.0, 10.0, -1.0), 'clip must be positive'),
    (lambda: DifferentiallyPrivateFactory.gaussian_fixed(-0.1, 10.0, 1.0),
     'noise_multiplier must be nonnegative'),
    (lambda: DifferentiallyPrivateFactory.gaussian_fixed(1.0, 0.0, 1.0),
     'clients_per_round must be positive'),
    (lambda: DifferentiallyPrivateFactory.gaussian_adaptive(0.5, 100.0, initial_l2_norm_clip=0.0),
     'initial_l2_norm_clip must be positive'),
    (lambda: DifferentiallyPrivateFactory.gaussian_adaptive(
        0.5, 100.0, target_unclipped_quantile=1.2), 'target_unclipped_quantile must be between'),
    (lambda: DifferentiallyPrivateFactory.gaussian_adaptive(0.5, 100.0, clipped_count_stddev=-1.0),
     'clipped_count_stddev must be nonnegative'),
])
def test_bad_arguments(build, message):
  with pytest.raises(ValueError, match=message):
    build()


def test_a_weighted_builder_refuses_the_unweighted_dp_factory_and_names_the_fix():
  import flax.linen as nn  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  import fedjax_like as fl  # noqa: PLC0415

  spec = (jax.ShapeDtypeStruct((3,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
  model = fl.models.from_linen(nn.Dense(2), spec)
  dp = DifferentiallyPrivateFactory.gaussian_fixed(0.5, 10.0, 1.0)
  sgd = fl.learning.optimizers.build_sgdm(0.1)
  with pytest.raises(TypeError, match=r'build_weighted_fed_avg weights its clients .* is '
                                      r'unweighted\. Use the unweighted builder'):
    fl.learning.algorithms.build_weighted_fed_avg(model, sgd, model_aggregator=dp)
  process = fl.learning.algorithms.build_unweighted_fed_avg(model, sgd, model_aggregator=dp)
  assert process.initialize().aggregator['noise_key'].shape == (2,)  # the key lives in the state
