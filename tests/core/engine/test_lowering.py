"""im2col lowering of convolutions against a plain NumPy convolution (values) and XLA (gradients)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from fedjax_like.core.engine import lowering
from fedjax_like.core.engine.lowering import has_convolution, im2col_convolutions


def numpy_conv_nhwc(x, k, strides, padding, dilation):
  """Direct-loop convolution: x [N, H, W, C], k [KH, KW, C, O], explicit padding pairs."""
  (pt, pb), (pl, pr) = padding
  x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  n, h, w, _ = x.shape
  kh, kw, _, o = k.shape
  oh = (h - (kh - 1) * dilation[0] - 1) // strides[0] + 1
  ow = (w - (kw - 1) * dilation[1] - 1) // strides[1] + 1
  out = np.zeros((n, oh, ow, o))
  for i in range(oh):
    for j in range(ow):
      for a in range(kh):
        for b in range(kw):
          pixel = x[:, i * strides[0] + a * dilation[0], j * strides[1] + b * dilation[1], :]
          out[:, i, j, :] += pixel @ k[a, b]
  return out


RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 9, 10, 3)).astype(np.float32)
K = RNG.normal(size=(3, 2, 3, 5)).astype(np.float32)


@pytest.mark.parametrize('strides', [(1, 1), (2, 1)])
@pytest.mark.parametrize('padding', [((0, 0), (0, 0)), ((1, 2), (0, 1))])
@pytest.mark.parametrize('dilation', [(1, 1), (2, 1)])
def test_im2col_matches_numpy_loop_and_xla_gradients(strides, padding, dilation):
  def conv(x, k):
    return lax.conv_general_dilated(
        x, k, strides, padding, rhs_dilation=dilation, dimension_numbers=('NHWC', 'HWIO', 'NHWC')
    )

  lowered = im2col_convolutions(conv)
  np.testing.assert_allclose(
      lowered(X, K), numpy_conv_nhwc(X, K, strides, padding, dilation), rtol=1e-4, atol=1e-4
  )
  g_xla = jax.grad(lambda x, k: jnp.sum(jnp.sin(conv(x, k))), argnums=(0, 1))(X, K)
  g_low = jax.grad(lambda x, k: jnp.sum(jnp.sin(lowered(x, k))), argnums=(0, 1))(X, K)
  for a, b in zip(g_xla, g_low):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_other_layouts_and_flax_modules():
  xn, kn = np.transpose(X, (0, 3, 1, 2)), np.transpose(K, (3, 2, 0, 1))
  conv = lambda x, k: lax.conv_general_dilated(
      x, k, (1, 1), 'SAME', dimension_numbers=('NCHW', 'OIHW', 'NCHW')
  )
  expected = numpy_conv_nhwc(X, K, (1, 1), ((1, 1), (0, 1)), (1, 1)).transpose(0, 3, 1, 2)
  np.testing.assert_allclose(im2col_convolutions(conv)(xn, kn), expected, rtol=1e-4, atol=1e-4)
  module = nn.Sequential([nn.Conv(4, (3, 3)), nn.relu, nn.Conv(2, (3, 3), strides=2)])
  params = module.init(jax.random.key(0), X)
  apply = lambda p, x: module.apply(p, x)
  assert has_convolution(apply, params, X) and not has_convolution(lambda x: x * 2, X)
  np.testing.assert_allclose(
      jax.jit(im2col_convolutions(apply))(params, X), apply(params, X), rtol=1e-4, atol=1e-5
  )


def test_grouped_convolution_is_left_to_xla():
  k = RNG.normal(size=(3, 3, 1, 6)).astype(np.float32)
  conv = lambda x, k: lax.conv_general_dilated(
      x, k, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=3
  )
  np.testing.assert_allclose(im2col_convolutions(conv)(X, k), conv(X, k), rtol=1e-6)


def test_lower_rewrites_only_when_asked():
  conv = lambda x, k: lax.conv(x, k, (1, 1), 'VALID')
  xn, kn = np.transpose(X, (0, 3, 1, 2)), np.transpose(K, (3, 2, 0, 1))
  assert lowering.lower(conv, 'xla') is conv
  assert lowering.lower(None, 'im2col') is None
  lowered = lowering.lower(conv, 'im2col')
  assert lowered is not conv
  assert 'conv_general_dilated' not in str(jax.make_jaxpr(lowered)(xn, kn))
  np.testing.assert_allclose(lowered(xn, kn), conv(xn, kn), rtol=1e-4, atol=1e-4)


def test_lowering_a_differentiated_step_rewrites_its_gradient_convolutions_too():
  """The engine lowers a loop's whole ``step`` after differentiation: the kernel gradient (a
  convolution whose window is larger than its output) and the input gradient are rewritten too,
  and the gradients match XLA's."""
  x = jnp.asarray(X)
  k = jnp.asarray(K)
  conv = lambda x, k: lax.conv_general_dilated(
      x, k, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  grad = jax.grad(lambda k, x: jnp.sum(jnp.tanh(conv(x, k))), argnums=(0, 1))
  lowered = lowering.lower(grad, 'im2col')
  assert 'conv_general_dilated' not in str(jax.make_jaxpr(lowered)(k, x))
  for a, b in zip(lowered(k, x), grad(k, x)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def numpy_max_pool_and_grad(x, window, upstream):
  """Non-overlapping max pool over axes 1.. of x, and its gradient routed to each window's first
  maximum in row-major order (what XLA's select_and_scatter does)."""
  outs = [n // w for n, w in zip(x.shape, window)]
  pooled = np.zeros(outs, x.dtype)
  grad = np.zeros_like(x)
  for out_index in np.ndindex(*outs):
    best, where = -np.inf, None
    for offset in np.ndindex(*window):
      src = tuple(o * w + f for o, w, f in zip(out_index, window, offset))
      if x[src] > best:  # strictly greater: the first maximum wins ties
        best, where = x[src], src
    pooled[out_index] = best
    grad[where] += upstream[out_index]
  return pooled, grad


@pytest.mark.parametrize(
    'shape,window',
    [((2, 7, 9, 3), (2, 2)), ((2, 8, 8, 4), (2, 2)), ((2, 9, 4), (3,)), ((2, 6, 6, 3), (3, 2))],
)
def test_max_pool_rewrite_matches_numpy_loop_on_values_ties_and_gradients(shape, window):
  x = np.maximum(RNG.normal(size=shape), 0).astype(np.float32)  # ReLU zeros: many ties
  x[0, :2, :2] = 1.5  # a positive tie inside one window
  full_window = (1, *window, 1)
  upstream = RNG.normal(size=[n // w for n, w in zip(shape, full_window)]).astype(np.float32)
  pool = lambda x: nn.max_pool(x, window, window)
  lowered = im2col_convolutions(pool)
  assert 'reduce_window' not in str(jax.make_jaxpr(lowered)(x))  # the rewrite did happen
  expected, expected_grad = numpy_max_pool_and_grad(x, full_window, upstream)
  np.testing.assert_array_equal(lowered(x), expected)
  grad = jax.grad(lambda x: jnp.sum(lowered(x) * upstream))(x)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-6)
  np.testing.assert_allclose(grad, jax.grad(lambda x: jnp.sum(pool(x) * upstream))(x), rtol=1e-6)
  tangent = RNG.normal(size=shape).astype(np.float32)  # forward mode works too
  np.testing.assert_allclose(
      jax.jvp(lowered, (x,), (tangent,))[1], jax.jvp(pool, (x,), (tangent,))[1], rtol=1e-6
  )


def test_avg_pool_rewrite_and_overlapping_pool_left_to_xla():
  avg = lambda x: nn.avg_pool(x, (2, 2), (2, 2))
  np.testing.assert_allclose(im2col_convolutions(avg)(X), avg(X), rtol=1e-6)
  overlapping = lambda x: nn.max_pool(x, (3, 3), (1, 1))
  assert 'reduce_window_max' in str(jax.make_jaxpr(im2col_convolutions(overlapping))(X))
  np.testing.assert_array_equal(im2col_convolutions(overlapping)(X), overlapping(X))
