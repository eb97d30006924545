"""Randomized Hadamard rotation: the transform against NumPy, exactness, less quantization error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from aggregator_helpers import run_rounds, value_type_of

from fedjax_like.aggregators import (
    HadamardTransformFactory,
    MeanFactory,
    SumFactory,
    UniformQuantizationFactory,
)
from fedjax_like.aggregators.rotation import fast_walsh_hadamard_transform, rotate, unrotate

RNG = np.random.default_rng(13)


def np_hadamard(d):
  """Sylvester's construction, normalized."""
  h = np.ones((1, 1))
  while h.shape[0] < d:
    h = np.block([[h, h], [h, -h]])
  return h / np.sqrt(d)


@pytest.mark.parametrize('d', [1, 2, 8, 64])
def test_fast_transform_is_the_hadamard_matrix(d):
  x = RNG.normal(size=(3, d)).astype(np.float32)
  got = np.asarray(jax.jit(fast_walsh_hadamard_transform)(x))
  np.testing.assert_allclose(got, x @ np_hadamard(d).T, rtol=1e-5, atol=1e-5)


def test_rotation_matches_numpy_and_inverts():
  value = {'k': RNG.normal(size=(3, 5)).astype(np.float32), 'b': RNG.normal(size=(6,)).astype(
      np.float32)}
  key = jax.random.key_data(jax.random.key(0))
  spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), value)
  rotated = jax.jit(rotate, static_argnums=2)(value, key, 2)
  assert rotated['k'].shape == (16,) and rotated['b'].shape == (8,)
  for leaf_index, name in enumerate(['b', 'k']):  # jax.tree.leaves order (sorted keys)
    v = np.pad(value[name].reshape(-1), (0, rotated[name].shape[0] - value[name].size))
    for r in range(2):
      signs = np.where(np.asarray(jax.random.bernoulli(
          jax.random.fold_in(key, leaf_index * 2 + r), 0.5, v.shape)), 1.0, -1.0)
      v = np_hadamard(len(v)) @ (signs * v)
    np.testing.assert_allclose(rotated[name], v, rtol=1e-5, atol=1e-5)
  back = jax.jit(lambda r, k: unrotate(r, k, 2, spec))(rotated, key)
  for name in value:
    np.testing.assert_allclose(back[name], value[name], rtol=1e-5, atol=1e-6)


def test_rotation_is_exact_around_sums_and_32_bit_quantization():
  values = {'w': RNG.normal(size=(6, 7, 3)).astype(np.float32),
            'b': RNG.normal(size=(6, 5)).astype(np.float32)}
  weights = RNG.uniform(1, 5, size=6).astype(np.float32)
  fused = HadamardTransformFactory(MeanFactory(), seed=1).create(value_type_of(values))
  assert fused.map_reduce is not None and fused.is_weighted  # the inner mean is a sum
  (mean,), (measured,), _ = run_rounds(fused, [values], [weights])
  for name, x in values.items():
    expected = (x * weights.reshape((-1,) + (1,) * (x.ndim - 1))).sum(0) / weights.sum()
    np.testing.assert_allclose(mean[name], expected, rtol=1e-5, atol=1e-6)
  assert set(measured) == {'hd'} and 'mean_weight' in measured['hd']
  quantized = HadamardTransformFactory(
      UniformQuantizationFactory(SumFactory(), 32, seed=2), num_repeats=2, seed=3)
  process = quantized.create(value_type_of(values))
  assert process.map_reduce is None
  (total,), (measured,), _ = run_rounds(process, [values])
  for name, x in values.items():
    np.testing.assert_allclose(total[name], x.sum(0), rtol=1e-5, atol=1e-5)
  # The quantizer sees the padded, rotated tensors: 32 + 8 elements of 32 bits, + 2 ranges.
  assert float(measured['hd']['bits_per_client']) == 32 * 40 + 2 * 64


def test_rotation_lowers_the_error_of_coarse_quantization():
  # A spiky vector: its range is set by a few coordinates, so without rotation most coordinates
  # are rounded on a coarse grid; rotated, the energy is spread and the range shrinks.
  n, d = 50, 256
  x = RNG.normal(scale=0.01, size=(d,)).astype(np.float32)
  x[:3] = [5.0, -4.0, 3.0]
  values = {'x': np.tile(x, (n, 1))}
  plain = UniformQuantizationFactory(SumFactory(), 4, seed=4).create(value_type_of(values))
  rotated = HadamardTransformFactory(UniformQuantizationFactory(SumFactory(), 4, seed=4),
                                     seed=5).create(value_type_of(values))
  (a,), _, _ = run_rounds(plain, [values])
  (b,), _, _ = run_rounds(rotated, [values])
  error_plain = np.mean((a['x'] / n - x) ** 2)
  error_rotated = np.mean((b['x'] / n - x) ** 2)
  assert error_rotated < 0.25 * error_plain


def test_signs_follow_the_seed_and_change_every_round():
  values = {'x': RNG.normal(size=(2, 8)).astype(np.float32)}
  process = HadamardTransformFactory(seed=1).create(value_type_of(values))
  state = process.initialize()
  prepared = [process.map_reduce.prepare(state)[0]]
  state = process.map_reduce.report(state, {'x': jnp.zeros(8)}).state  # one round on
  prepared.append(process.map_reduce.prepare(state)[0])
  again = HadamardTransformFactory(seed=1).create(value_type_of(values))
  other = HadamardTransformFactory(seed=2).create(value_type_of(values))
  np.testing.assert_array_equal(again.map_reduce.prepare(again.initialize())[0], prepared[0])
  assert not np.array_equal(other.map_reduce.prepare(other.initialize())[0], prepared[0])
  assert not np.array_equal(prepared[0], prepared[1])


def test_bad_arguments():
  with pytest.raises(ValueError, match='num_repeats should be a positive integer'):
    HadamardTransformFactory(num_repeats=0)
  with pytest.raises(TypeError, match='aggregation factory'):
    HadamardTransformFactory(inner_agg_factory=3)
  with pytest.raises(ValueError, match='power-of-2'):
    fast_walsh_hadamard_transform(jnp.ones(6))
