"""The native dense-product kernels and the ``dot_general`` rewrite against NumPy loops."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from fedjax_like.core.engine import dense, lowering

RNG = np.random.default_rng(11)


pytestmark = pytest.mark.usefixtures('native_kernels')


def _np_matmul(a, b):
  """``a [M, K] @ b [K, N]`` as a float64 loop over the contraction."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  out = np.zeros((a.shape[0], b.shape[1]))
  for k in range(a.shape[1]):
    out += np.outer(a[:, k], b[k])
  return out


def _normal(*shape):
  return RNG.normal(size=shape).astype(np.float32)


@pytest.mark.parametrize('m,k,n', [(1, 1, 16), (5, 3, 17), (6, 784, 62), (7, 40, 64),
                                   (16, 200, 100), (33, 9, 200)])
def test_matmul_and_matmul_tn_match_numpy(m, k, n):
  a, b = _normal(m, k), _normal(k, n)
  np.testing.assert_allclose(jax.jit(dense.matmul)(a, b), _np_matmul(a, b), rtol=1e-5, atol=1e-4)
  x, g = _normal(m, k), _normal(m, n)  # xᵀ g: [k, n], summed over the m rows
  np.testing.assert_allclose(
      jax.jit(dense.matmul_tn)(x, g), _np_matmul(x.T, g), rtol=1e-5, atol=1e-4
  )


def test_leading_dimensions_batch_and_broadcast():
  a, b = _normal(3, 2, 5, 20), _normal(3, 1, 20, 18)  # b shared along the second axis
  out = jax.jit(dense.matmul)(a, b)
  assert out.shape == (3, 2, 5, 18)
  for i in range(3):
    for j in range(2):
      np.testing.assert_allclose(out[i, j], _np_matmul(a[i, j], b[i, 0]), rtol=1e-5, atol=1e-4)
  # vmap (the engine's client axis) over one operand, then over both.
  w = _normal(20, 30)
  xs = _normal(4, 6, 20)
  batched = jax.jit(jax.vmap(dense.matmul, in_axes=(0, None)))(xs, w)
  np.testing.assert_allclose(batched, np.stack([_np_matmul(x, w) for x in xs]), rtol=1e-5,
                             atol=1e-4)
  gs = _normal(4, 6, 30)
  tn = jax.jit(jax.vmap(jax.vmap(dense.matmul_tn), in_axes=(None, 0)))(xs, gs[None].repeat(2, 0))
  assert tn.shape == (2, 4, 20, 30)
  np.testing.assert_allclose(tn[1, 2], _np_matmul(xs[2].T, gs[2]), rtol=1e-5, atol=1e-4)


def test_gradients_through_the_kernels_match_xla():
  a, b, g = _normal(6, 20), _normal(20, 24), _normal(6, 24)

  def through(f, ref):
    got = jax.grad(lambda p, q: jnp.sum(f(p, q) * g), argnums=(0, 1))(a, b)
    want = jax.grad(lambda p, q: jnp.sum(ref(p, q) * g), argnums=(0, 1))(a, b)
    for x, y in zip(got, want):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)

  through(dense.matmul, jnp.matmul)
  x = _normal(6, 24)
  got = jax.grad(lambda p: jnp.sum(dense.matmul_tn(p, x) ** 2))(a)
  want = jax.grad(lambda p: jnp.sum((p.T @ x) ** 2))(a)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    'lhs_shape,rhs_shape,contract,transposed',
    [
        ((16, 784), (784, 62), ((1,), (0,)), False),  # x @ W
        ((16, 62), (16, 784), ((0,), (0,)), False),  # gᵀ x: a weight gradient
        ((16, 62), (16, 784), ((0,), (0,)), True),  # ... whose one use transposes it
        ((16, 62), (200, 62), ((1,), (1,)), False),  # g @ Wᵀ: an input gradient
        ((2, 8, 30), (30, 20), ((2,), (0,)), False),  # a sequence batch [B, T, K] @ W
        ((2, 8, 30), (2, 8, 20), ((0, 1), (0, 1)), False),  # its weight gradient
    ],
)
def test_dot_general_rewrite_matches_lax(lhs_shape, rhs_shape, contract, transposed):
  lhs, rhs = _normal(*lhs_shape), _normal(*rhs_shape)
  numbers = (contract, ((), ()))
  got = jax.jit(lambda p, q: dense.dot_general(
      p, q, dimension_numbers=numbers, transposed=transposed))(lhs, rhs)
  want = lax.dot_general(lhs.astype(np.float64), rhs.astype(np.float64), numbers)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  jaxpr = str(jax.make_jaxpr(lambda p, q: dense.dot_general(
      p, q, dimension_numbers=numbers, transposed=transposed))(lhs, rhs))
  assert 'fjl_dense' in jaxpr and 'dot_general' not in jaxpr


@pytest.mark.parametrize(
    'lhs,rhs,numbers,why',
    [
        (_normal(16, 784), _normal(784, 10), (((1,), (0,)), ((), ())), 'fewer than 16 columns'),
        (_normal(4, 5, 20), _normal(4, 20, 30), (((2,), (1,)), ((0,), (0,))), 'batch dimensions'),
        (np.ones((16, 20), np.int32), np.ones((20, 32), np.int32), (((1,), (0,)), ((), ())),
         'integers'),
        (_normal(20, 9216), _normal(9216, 128), (((1,), (0,)), ((), ())), 'a long contraction'),
        (_normal(64, 784), _normal(64, 62), (((0,), (0,)), ((), ())), 'a long batch sum'),
        (_normal(20, 784), _normal(20, 200), (((0,), (0,)), ((), ())), 'a large gradient'),
        (_normal(20, 128), _normal(9216, 128), (((1,), (1,)), ((), ())), 'a large transpose'),
        (_normal(3, 20, 4), _normal(20, 32), (((1,), (0,)), ((), ())), 'a middle axis'),
    ],
)
def test_dot_general_leaves_what_the_kernels_do_not_win_to_xla(lhs, rhs, numbers, why):
  assert dense.dot_general(lhs, rhs, dimension_numbers=numbers) is None, why


def test_the_kernel_rejects_mismatched_shapes_with_a_clear_error():
  call = jax.ffi.ffi_call('fjl_dense_nn', jax.ShapeDtypeStruct((4, 8), jnp.float32))
  with pytest.raises(Exception, match='at least 16 columns'):
    jax.block_until_ready(jax.jit(call)(jnp.ones((4, 3)), jnp.ones((3, 8))))


class _MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(48)(x.reshape(x.shape[0], -1)))
    return nn.Dense(20)(x)


def test_a_lowered_sgd_step_matches_xla_and_uses_the_kernels():
  module = _MLP()
  x = _normal(16, 7, 9)
  y = RNG.integers(0, 20, 16).astype(np.int32)
  params = module.init(jax.random.key(0), x)

  def step(p, x, y):
    loss = lambda q: optax.softmax_cross_entropy_with_integer_labels(
        module.apply(q, x), y).mean()
    return jax.tree.map(lambda w, g: w - 0.1 * g, p, jax.grad(loss)(p))

  lowered = lowering.lower(step, 'xla', 'native')
  text = str(jax.make_jaxpr(lowered)(params, x, y))
  assert text.count('fjl_dense_nn') >= 3 and text.count('fjl_dense_tn') >= 2
  got, want = jax.jit(lowered)(params, x, y), jax.jit(step)(params, x, y)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert lowering.lower(step, 'xla', 'xla') is step
