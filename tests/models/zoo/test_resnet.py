"""TFF's ResNet-18 with group norm (fedjax_like/models/zoo/resnet.py): the parameter count layer
by layer, group norm with 2 groups against NumPy, and TFF's L2 penalty."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_like.models import zoo
from fedjax_like.models.zoo.resnet import ResNet, group_norm, l2_regularizer


def conv(k, cin, cout):
  return k * k * cin * cout  # No biases (TFF's use_bias=False).


def norm(c):
  return 2 * c  # Scale and offset per channel.


def test_resnet18_parameter_count_layer_by_layer():
  expected = conv(7, 3, 64) + norm(64)  # Stem.
  expected += conv(3, 64, 64) + norm(64) + conv(3, 64, 64)  # First block: no first norm.
  expected += norm(64) + conv(3, 64, 64) + norm(64) + conv(3, 64, 64)
  for cin, cout in [(64, 128), (128, 256), (256, 512)]:
    expected += norm(cin) + conv(3, cin, cout) + norm(cout) + conv(3, cout, cout)
    expected += conv(1, cin, cout) + norm(cout)  # Projection shortcut.
    expected += norm(cout) + conv(3, cout, cout) + norm(cout) + conv(3, cout, cout)
  expected += norm(512) + 512 * 100 + 100  # Final norm and the dense head.
  for groups in (2, 32):
    model = zoo.resnet18(num_groups=groups)
    weights = jax.eval_shape(model.init_fn, jax.random.key(0))
    assert sum(int(np.prod(s.shape)) for s in jax.tree.leaves(weights.trainable)) == expected
  assert expected == 11_227_812
  out = jax.eval_shape(lambda w: model.apply_fn(w, jnp.zeros((2, 24, 24, 3)), None, False), weights)
  assert out.shape == (2, 100)
  with pytest.raises(ValueError, match='num_groups'):
    zoo.resnet18(num_groups=3)


def test_group_norm_with_two_groups():
  x = np.random.default_rng(0).normal(size=(2, 3, 3, 8)).astype(np.float32) * 3 + 1
  out = np.asarray(group_norm(2).apply({'params': {'scale': np.ones(8), 'bias': np.zeros(8)}}, x))
  groups = x.reshape(2, 3, 3, 2, 4).astype(np.float64)
  mean = groups.mean(axis=(1, 2, 4), keepdims=True)
  var = groups.var(axis=(1, 2, 4), keepdims=True)
  expected = ((groups - mean) / np.sqrt(var + 1e-3)).reshape(x.shape)
  np.testing.assert_allclose(out, expected, atol=1e-4)


def test_l2_penalty_covers_kernels_and_the_head_only():
  model = ResNet(num_classes=3, stage_sizes=(1, 1), initial_filters=4)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))['params']
  rng = np.random.default_rng(0)  # Every parameter non-zero, group-norm offsets included.
  params = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
  expected = 0.0
  for layer, leaves in params.items():
    for name, value in leaves.items():
      if name == 'kernel' or layer == 'head':
        expected += np.sum(np.asarray(value, np.float64) ** 2)
  np.testing.assert_allclose(l2_regularizer(params), 1e-4 * expected, rtol=1e-5)
  assert zoo.resnet18().regularizer is l2_regularizer
