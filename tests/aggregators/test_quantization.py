"""Stochastic uniform quantization: NumPy reference, unbiasedness (statistical), keys, nesting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from aggregator_helpers import run_rounds, value_type_of

from fedjax_like.aggregators import (
    EncodedSumFactory,
    MeanFactory,
    SumFactory,
    UniformQuantizationFactory,
    UnweightedMeanFactory,
    clipping_factory,
    zeroing_factory,
)
from fedjax_like.aggregators.quantization import quantize_dequantize

RNG = np.random.default_rng(11)


def np_quantize(x, u, bits, lo=None, hi=None):
  """TFF's uniform quantization in float64 given the uniform draws ``u``."""
  x = x.astype(np.float64).reshape(-1)
  if lo is None:
    lo, hi = x.min(), x.max()
  x = np.clip(x, lo, hi)
  levels = 2.0**bits - 1
  s = (x - lo) / (hi - lo) * levels if hi > lo else np.zeros_like(x)
  q = np.floor(s) + (u.reshape(-1) < s - np.floor(s))
  return q / levels * (hi - lo) + lo


@pytest.mark.parametrize('bits', [1, 3, 8])
def test_quantize_matches_numpy_given_the_draws(bits):
  x = RNG.normal(size=(6, 7)).astype(np.float32)
  key = jax.random.key(4)
  u = np.asarray(jax.random.uniform(key, (42,), jnp.float32))
  quantize = jax.jit(quantize_dequantize, static_argnums=(2, 3, 4))
  got = np.asarray(quantize(jnp.asarray(x), key, bits))
  np.testing.assert_allclose(got.reshape(-1), np_quantize(x, u, bits), rtol=1e-5, atol=1e-6)
  fixed = np.asarray(quantize(jnp.asarray(x), key, bits, True, (-0.5, 0.5)))
  np.testing.assert_allclose(fixed.reshape(-1), np_quantize(x, u, bits, -0.5, 0.5), atol=1e-6)


def test_the_process_uses_one_key_per_client_split_from_the_round_key():
  values = {'a': RNG.normal(size=(3, 10)).astype(np.float32),
            'b': RNG.normal(size=(3, 2, 2)).astype(np.float32)}
  process = UniformQuantizationFactory(SumFactory(), 4, seed=7).create(value_type_of(values))
  (result,), _, _ = run_rounds(process, [values])
  round_key = jax.random.split(process.initialize()['rounding_key'])[1]
  client_keys = jax.random.split(round_key, 3)
  expected = {}
  for leaf_index, name in enumerate(['a', 'b']):  # jax.tree.leaves order
    total = 0.0
    for i in range(3):
      u = np.asarray(jax.random.uniform(jax.random.fold_in(client_keys[i], leaf_index),
                                        (values[name][i].size,), jnp.float32))
      total = total + np_quantize(values[name][i], u, 4).reshape(values[name].shape[1:])
    expected[name] = total
  for name in values:
    np.testing.assert_allclose(result[name], expected[name], rtol=1e-5, atol=1e-5)


def test_quantization_is_unbiased():
  # 4,000 clients holding the same value, 2 bits: the mean of their quantized values is within
  # 5 standard errors of the value in every coordinate (SE_j = delta sqrt(p_j (1 - p_j) / N)).
  n, bits = 4000, 2
  x = np.linspace(-1.0, 1.0, 64).astype(np.float32) + RNG.uniform(-0.01, 0.01, 64).astype(
      np.float32)
  values = {'x': np.tile(x, (n, 1))}
  process = UniformQuantizationFactory(UnweightedMeanFactory(), bits, seed=0).create(
      value_type_of(values))
  (mean,), _, _ = run_rounds(process, [values])
  delta = (x.max() - x.min()) / (2**bits - 1)
  frac = (x - x.min()) / delta % 1.0
  se = delta * np.sqrt(np.maximum(frac * (1 - frac), 1e-3) / n)
  z = (mean['x'] - x) / se
  assert np.abs(z).max() < 5.0
  assert abs(z.mean()) < 5.0 / np.sqrt(len(x))  # no systematic bias either
  # Round-to-nearest is biased: the same test fails for it.
  biased = UniformQuantizationFactory(UnweightedMeanFactory(), bits, stochastic=False).create(
      value_type_of(values))
  (rounded,), _, _ = run_rounds(biased, [values])
  assert np.abs((rounded['x'] - x) / se).max() > 20.0


def test_values_land_on_the_grid_and_32_bits_are_exact():
  x = RNG.normal(size=(1, 300)).astype(np.float32)
  values = {'x': x}
  (q,), _, _ = run_rounds(UniformQuantizationFactory(SumFactory(), 3, seed=1).create(
      value_type_of(values)), [values])
  levels = (q['x'] - x.min()) / ((x.max() - x.min()) / 7)
  np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
  assert len(np.unique(np.round(levels))) <= 8
  (exact,), _, _ = run_rounds(UniformQuantizationFactory(SumFactory(), 32, seed=1).create(
      value_type_of(values)), [values])
  np.testing.assert_allclose(exact['x'], x[0], rtol=1e-6, atol=1e-6)


def test_bits_measurements_and_threshold():
  values = {'big': RNG.normal(size=(2, 50)).astype(np.float32),
            'small': RNG.normal(size=(2, 5)).astype(np.float32)}
  process = EncodedSumFactory.quantize_above_threshold(8, 20, seed=2).create(
      value_type_of(values))
  (result,), (measured,), _ = run_rounds(process, [values])
  np.testing.assert_allclose(result['small'], values['small'].sum(0), rtol=1e-6)  # not quantized
  assert float(measured['bits_per_client']) == 8 * 50 + 64 + 32 * 5
  assert float(measured['float32_bits_per_client']) == 32 * 55
  np.testing.assert_allclose(measured['compression_ratio'], 32 * 55 / (8 * 50 + 64 + 160))
  assert measured['uniform_quantization'] == ()


def test_same_seed_same_run_and_resume_is_bit_exact():
  rounds = [{'x': RNG.normal(size=(4, 30)).astype(np.float32)} for _ in range(3)]
  make = lambda: UniformQuantizationFactory(MeanFactory(), 4, seed=5).create(  # noqa: E731
      value_type_of(rounds[0]))
  weights = [np.arange(1.0, 5.0, dtype=np.float32)] * 3
  full, _, _ = run_rounds(make(), rounds, weights)
  first, _, state = run_rounds(make(), rounds[:1], weights[:1])
  saved = jax.tree.map(np.asarray, state)  # as a checkpoint would hold it
  rest, _, _ = run_rounds(make(), rounds[1:], weights[1:], state=saved)
  for a, b in zip(full, first + rest):  # a new process from the same seed, resumed mid-run
    np.testing.assert_array_equal(a['x'], b['x'])
  assert not np.array_equal(full[1]['x'], full[2]['x'])


def test_non_finite_clients_pass_through_to_the_mean_which_counts_them():
  values = {'x': RNG.normal(size=(4, 20)).astype(np.float32)}
  values['x'][2, 3] = np.nan
  process = UniformQuantizationFactory(UnweightedMeanFactory(), 32, seed=1).create(
      value_type_of(values))
  (result,), (measured,), _ = run_rounds(process, [values])
  np.testing.assert_allclose(result['x'], values['x'][[0, 1, 3]].mean(0), rtol=1e-5, atol=1e-6)
  assert int(measured['uniform_quantization']['num_clients_non_finite']) == 1


def test_nests_inside_zeroing_and_clipping():
  values = {'x': RNG.normal(size=(5, 40)).astype(np.float32)}
  values['x'][0] *= 100.0
  weights = np.ones(5, np.float32)
  factory = zeroing_factory(50.0, clipping_factory(
      3.0, UniformQuantizationFactory(MeanFactory(), 32, seed=3)))
  process = factory.create(value_type_of(values))
  assert process.is_weighted and process.map_reduce is None
  (result,), (measured,), _ = run_rounds(process, [values], [weights])
  norms = np.linalg.norm(values['x'][1:], axis=1)
  clipped = values['x'][1:] * np.minimum(1.0, 3.0 / norms)[:, None]
  np.testing.assert_allclose(result['x'], clipped.sum(0) / 5, rtol=1e-5, atol=1e-6)
  assert int(measured['zeroed_count']) == 1
  assert 'bits_per_client' in measured['zeroing']['clipping']


def test_bad_arguments():
  for bits in (0, 33):
    with pytest.raises(ValueError, match=r'quantization_bits must be in \[1, 32\]'):
      UniformQuantizationFactory(SumFactory(), bits)
  with pytest.raises(TypeError, match='quantization_bits must be an int'):
    UniformQuantizationFactory(SumFactory(), 8.0)
  with pytest.raises(ValueError, match=r'quantization_bits must be in \[1, 16\]'):
    EncodedSumFactory.quantize_above_threshold(17)
  with pytest.raises(ValueError, match='threshold must be non-negative'):
    UniformQuantizationFactory(SumFactory(), 8, -1)
  with pytest.raises(ValueError, match='min_max must be'):
    UniformQuantizationFactory(SumFactory(), 8, min_max=(1.0, 1.0))
  with pytest.raises(TypeError, match='tensor_encoding'):
    EncodedSumFactory(lambda spec: None)
  with pytest.raises(TypeError, match='compresses floating-point values'):
    UniformQuantizationFactory().create(jax.ShapeDtypeStruct((3,), jnp.int32))
