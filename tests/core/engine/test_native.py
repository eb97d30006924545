"""The native CPU convolution kernels against NumPy loops, under the engine's transformations."""

import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from fedjax_like.core.engine import ClientLoop, Engine, ExecutionConfig, Program, native
from fedjax_like.core.engine.lowering import im2col_convolutions, native_convolutions

RNG = np.random.default_rng(7)


pytestmark = pytest.mark.usefixtures('native_kernels')


def numpy_conv_and_grads(x, w, dy, padding=((0, 0), (0, 0))):
  """Stride-1 convolution of x [N,H,W,C] zero-padded by ((top, bottom), (left, right)) with
  w [KH,KW,C,O], and dx, dw for upstream dy, in float64 loops over the kernel taps."""
  (pt, pb), (pl, pr) = padding
  _, h, wd, _ = x.shape
  kh, kw, _, o = w.shape
  xp = np.pad(x.astype(np.float64), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  w64, dy64 = w.astype(np.float64), dy.astype(np.float64)
  oh, ow = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
  y = np.zeros((x.shape[0], oh, ow, o))
  dxp = np.zeros_like(xp)
  dw = np.zeros_like(w64)
  for a in range(kh):
    for b in range(kw):
      window = xp[:, a : a + oh, b : b + ow, :]  # [N, OH, OW, C]
      y += window @ w64[a, b]
      dw[a, b] = np.einsum('nijc,nijo->co', window, dy64)
      dxp[:, a : a + oh, b : b + ow, :] += dy64 @ w64[a, b].T
  return y, dxp[:, pt : pt + h, pl : pl + wd], dw


def _data(n, h, wd, c, o, kh=3, kw=3, padding=((0, 0), (0, 0))):
  (pt, pb), (pl, pr) = padding
  x = RNG.normal(size=(n, h, wd, c)).astype(np.float32)
  w = (RNG.normal(size=(kh, kw, c, o)) / np.sqrt(kh * kw * c)).astype(np.float32)
  dy = RNG.normal(size=(n, h + pt + pb - kh + 1, wd + pl + pr - kw + 1, o)).astype(np.float32)
  return x, w, dy


SAME = ((1, 1), (1, 1))


@pytest.mark.parametrize(
    'n,h,wd,c,o,kh,kw,padding',
    [
        (3, 9, 11, 32, 64, 3, 3, None),  # the EMNIST CNN's second convolution; a partial tile
        (2, 8, 8, 1, 32, 3, 3, None),  # one input channel: the input gradient takes the einsum path
        (2, 30, 29, 64, 32, 3, 3, None),  # the second convolution's input-gradient shape
        (1, 6, 7, 5, 48, 2, 3, None),  # three vectors of outputs, odd channels, a 2x3 kernel
        (2, 7, 40, 16, 80, 3, 1, None),  # 80 outputs: a 4-vector and a 1-vector block; long rows
        (17, 5, 5, 16, 16, 5, 5, None),  # kernel as large as the image (1x1 output); 17 images
        (2, 9, 10, 32, 64, 3, 3, SAME),  # 'SAME': edge pixels skip the taps on the padding
        (2, 8, 8, 1, 32, 3, 3, SAME),  # 'SAME' on one channel (an image's first layer)
        (1, 6, 9, 16, 16, 5, 3, ((0, 4), (2, 1))),  # lopsided padding, as wide as the kernel - 1
        (2, 3, 3, 16, 32, 5, 5, ((2, 2), (2, 2))),  # an image smaller than the kernel
    ],
)
def test_values_and_both_gradients_match_numpy_loops(n, h, wd, c, o, kh, kw, padding):
  padding = padding or ((0, 0), (0, 0))
  x, w, dy = _data(n, h, wd, c, o, kh, kw, padding)
  assert native.supports(x, w, padding)
  y_ref, dx_ref, dw_ref = numpy_conv_and_grads(x, w, dy, padding)
  y, vjp = jax.vjp(jax.jit(lambda x, w: native.conv2d(x, w, padding)), x, w)
  dx, dw = vjp(dy)
  scale = lambda r: np.abs(r).max()
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5 * scale(y_ref))
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5 * scale(dx_ref))
  np.testing.assert_allclose(dw, dw_ref, rtol=1e-5, atol=1e-5 * scale(dw_ref))


def test_kernel_gradient_is_deterministic():
  x, w, dy = _data(32, 12, 12, 32, 64)  # many images: the sum is split over threads
  grad = jax.jit(lambda x, w, dy: jax.vjp(native.conv2d, x, w)[1](dy)[1])
  first = np.asarray(grad(x, w, dy))
  for _ in range(5):
    np.testing.assert_array_equal(grad(x, w, dy), first)


@pytest.mark.parametrize(
    'n,h,wd,kh,kw', [(128, 28, 28, 3, 3), (1, 1, 100_000, 1, 3)]  # many images; one wide row
)
def test_kernel_gradient_stays_accurate_over_a_long_sum(n, h, wd, kh, kw):
  """Positive values over ~100k output pixels: a single float32 running sum errs 5e-6 to 1e-5
  here; the kernel sums blocks of at most ~4k pixels and adds them, staying within 2e-6 of
  float64, in rows and along one very wide row alike."""
  c = o = 16
  oh, ow = h - kh + 1, wd - kw + 1
  x = RNG.uniform(size=(n, h, wd, c)).astype(np.float32)
  dy = RNG.uniform(size=(n, oh, ow, o)).astype(np.float32)
  w = np.zeros((kh, kw, c, o), np.float32)
  x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
  expected = np.stack([
      np.stack([np.einsum('nijc,nijo->co', x64[:, a : a + oh, b : b + ow], dy64)
                for b in range(kw)])
      for a in range(kh)
  ])
  dw = jax.jit(lambda x, dy: jax.vjp(native.conv2d, x, w)[1](dy)[1])(x, dy)
  assert np.abs(np.asarray(dw, np.float64) - expected).max() / np.abs(expected).max() < 2e-6


def test_nested_vmap_runs_every_batch_element():
  """The kernels take any leading batch dimensions (vmap inside vmap: rank 6)."""
  x = RNG.normal(size=(2, 3, 2, 7, 7, 16)).astype(np.float32)
  w = RNG.normal(size=(2, 3, 3, 3, 16, 16)).astype(np.float32)
  dy = RNG.normal(size=(2, 3, 2, 7, 7, 16)).astype(np.float32)

  def conv_and_grads(x, w, dy):
    y, vjp = jax.vjp(lambda x, w: native.conv2d(x, w, SAME), x, w)
    return (y, *vjp(dy))

  got = jax.jit(jax.vmap(jax.vmap(conv_and_grads)))(x, w, dy)
  for i in range(2):
    for j in range(3):
      expected = numpy_conv_and_grads(x[i, j], w[i, j], dy[i, j], SAME)
      for part, ref in zip(got, expected, strict=True):
        np.testing.assert_allclose(part[i, j], ref, rtol=1e-5, atol=1e-4)


class _CNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(16, (3, 3), padding='SAME')(x))  # padded, one input channel
    x = nn.relu(nn.Conv(32, (3, 3), padding='VALID')(x))
    x = nn.Conv(8, (3, 3), strides=2)(x)  # strided, 8 outputs: left to im2col
    return nn.Dense(5)(x.reshape(x.shape[0], -1))


def test_lowering_routes_supported_convolutions_to_the_kernels():
  module = _CNN()
  x = RNG.normal(size=(4, 10, 10, 1)).astype(np.float32)
  labels = np.arange(4) % 5
  params = module.init(jax.random.key(0), x)

  def loss(apply, p):
    logits = apply(p, x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

  lowered = native_convolutions(module.apply)
  jaxpr = str(jax.make_jaxpr(lambda p: jax.grad(lambda p: loss(lowered, p))(p))(params))
  assert jaxpr.count('fjl_conv2d_fwd') >= 3  # two forward passes, one input gradient
  assert 'fjl_conv2d_dw' in jaxpr and 'conv_general_dilated' not in jaxpr
  np.testing.assert_allclose(lowered(params, x), module.apply(params, x), rtol=1e-5, atol=1e-5)
  g_native = jax.grad(lambda p: loss(lowered, p))(params)
  g_xla = jax.grad(lambda p: loss(module.apply, p))(params)
  g_im2col = jax.grad(lambda p: loss(im2col_convolutions(module.apply), p))(params)
  leaves = [jax.tree.leaves(g) for g in (g_native, g_xla, g_im2col)]
  for a, b, c in zip(*leaves, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-6)


def test_engine_uses_the_kernels_on_cpu_by_default():
  conv = lambda x, k: lax.conv_general_dilated(
      x, k, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  x, w, _ = _data(2, 6, 6, 4, 16)
  # A client loop whose step differentiates the convolution: the engine lowers the whole step.
  loss = lambda k, xb: jnp.sum(conv(xb, k) ** 2)  # noqa: E731
  loop = ClientLoop(
      lambda shared, client_input: shared,
      lambda k, batch, mask: k - 1e-3 * jax.grad(loss)(k, batch),
      lambda shared, k: k,
  )
  batches = jnp.stack([x, x + 1.0])[None]  # [1 client, 2 steps, 2, 6, 6, 4]
  mask = jnp.ones((1, 2, 2), bool)
  program = Program.of_loop(loop, w, None, jnp.zeros((1,)), 0, (batches, mask))
  expected = Engine(ExecutionConfig('sequential', conv_lowering='xla')).map(program)
  for mode, native_fwd, native_dw in (('auto', True, True), ('native', True, True),
                                      ('im2col', False, False)):
    engine = Engine(ExecutionConfig('sequential', conv_lowering=mode))
    text = str(jax.make_jaxpr(lambda: engine.map(program))())
    assert ('fjl_conv2d_fwd' in text) is native_fwd, mode
    assert ('fjl_conv2d_dw' in text) is native_dw, mode
    np.testing.assert_allclose(engine.map(program), expected, rtol=1e-4, atol=1e-4)


def test_a_bad_call_names_the_problem():
  x = jnp.ones((1, 5, 5, 3))
  w = jnp.ones((3, 3, 3, 10))  # 10 output channels: not a multiple of 16
  assert not native.supports(x, w)
  call = jax.ffi.ffi_call('fjl_conv2d_fwd', jax.ShapeDtypeStruct((1, 3, 3, 10), jnp.float32))
  with pytest.raises(Exception, match='multiple of 16'):
    jax.block_until_ready(call(x, w))


def _fresh_process(code, **env):
  run_env = {**os.environ, **env}
  done = subprocess.run(
      [sys.executable, '-c', textwrap.dedent(code)],
      capture_output=True,
      text=True,
      env=run_env,
      timeout=240,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  return done


_FALLBACK = """
    import warnings
    import numpy as np, jax
    from jax import lax
    from fedjax_like.core.engine import native
    from fedjax_like.core.engine.lowering import native_convolutions, native_dense
    conv = lambda x, k: lax.conv_general_dilated(
        x, k, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 4)).astype(np.float32)
    k = np.random.default_rng(1).normal(size=(3, 3, 4, 16)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always')
      lowered = native_convolutions(conv)
      assert 'fjl_conv2d' not in str(jax.make_jaxpr(lowered)(x, k))
      np.testing.assert_allclose(lowered(x, k), conv(x, k), rtol=1e-5, atol=1e-5)
      a, b = np.ones((4, 8), np.float32), np.ones((8, 32), np.float32)
      product = native_dense(lambda a, b: a @ b)
      print('DENSE ON XLA', 'fjl_dense' not in str(jax.make_jaxpr(product)(a, b)))
      np.testing.assert_allclose(product(a, b), a @ b)
    print('AVAILABLE', native.available(), 'REASON', native.unavailable_reason())
    print('WARNINGS', [str(w.message) for w in caught])
"""


def test_without_a_working_compiler_the_engine_falls_back_with_one_warning(tmp_path):
  done = _fresh_process(_FALLBACK, CC='false', FEDJAX_LIKE_CACHE_DIR=str(tmp_path))
  assert 'AVAILABLE False' in done.stdout and 'DENSE ON XLA True' in done.stdout
  assert 'failed' in done.stdout and 'native CPU kernels unavailable' in done.stdout
  assert done.stdout.count('unavailable, using the im2col lowering') == 1


def test_disabled_by_environment_without_a_warning(tmp_path):
  done = _fresh_process(_FALLBACK, FEDJAX_LIKE_NATIVE='0', FEDJAX_LIKE_CACHE_DIR=str(tmp_path))
  assert 'AVAILABLE False REASON disabled' in done.stdout and 'WARNINGS []' in done.stdout
  assert not list(tmp_path.iterdir())  # nothing was built
