"""TFF's ResNets with group normalization (``tff.simulation.models.resnet_models``), for CIFAR-100.

:class:`ResNet` is TFF's ``create_resnet`` (a pre-activation ResNet v2, He et al. 2016) with group
normalization in place of batch normalization, as Reddi et al. 2020 train it on CIFAR-100:

- a 7x7 convolution with stride 2 ('same'), group norm, ReLU, a 3x3 max-pool with stride 2;
- stages of residual blocks with 64, 128, 256, 512 filters (ResNet-18: 2, 2, 2, 2 basic blocks).
  A basic block is ``[norm, ReLU,] conv3x3, norm, ReLU, conv3x3`` (no first norm in the very
  first block) plus a shortcut, which is a 1x1 convolution and a group norm where the channels
  change. As in TFF's code, every block has stride 1, so the stages keep the 6x6 map a 24x24
  input has after the stem;
- group norm, ReLU, global average pooling, a dense layer to the logits (TFF's ends in a softmax
  and uses ``SparseCategoricalCrossentropy()``, which Keras computes from the logits).

Initialization as TFF's: he-normal convolution kernels without biases, ``RandomNormal(0.01)`` for
the dense kernel, zero biases, group norms with scale 1 and offset 0. TFF puts an L2 penalty of
1e-4 on every convolution kernel and on the dense kernel and bias, which Keras adds to the loss
it differentiates; :func:`resnet18` sets it as the model's ``regularizer`` (the reported loss
leaves it out, as TFF's does).

**Groups.** Reddi et al. use 2 groups per group-norm layer, as TFF's own group norm layer did by
default (epsilon 1e-3) until January 2023; TFF now uses Keras's ``GroupNormalization``, whose
default is 32 groups. ``num_groups=2`` (the paper) is the default here; pass ``num_groups=32`` for
TFF's current model.

Parameters of ``resnet18(num_classes=100)``: 11,227,812 (the same for any input size and any
number of groups; counted layer by layer in the tests).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedjax_like.models.flax import from_linen
from fedjax_like.models.model import Model

L2_WEIGHT_DECAY = 1e-4
_HE = nn.initializers.he_normal()


def group_norm(num_groups: int) -> nn.GroupNorm:
  """Group normalization over ``(H, W, C / num_groups)`` per group, epsilon 1e-3 (TFF's)."""
  return nn.GroupNorm(num_groups=num_groups, epsilon=1e-3)


class ResNet(nn.Module):
  """``images[B, H, W, C] -> logits[B, num_classes]`` (basic blocks only, as ResNet-18/34)."""

  num_classes: int = 100
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  num_groups: int = 2
  initial_filters: int = 64

  def _conv(self, filters: int, kernel: int, strides: int = 1) -> nn.Conv:
    return nn.Conv(filters, (kernel, kernel), strides=(strides, strides), padding='SAME',
                   use_bias=False, kernel_init=_HE)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    norm_relu = lambda h: nn.relu(group_norm(self.num_groups)(h))  # noqa: E731
    x = norm_relu(self._conv(self.initial_filters, 7, strides=2)(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
    filters = self.initial_filters
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        first = stage == 0 and block == 0
        h = self._conv(filters, 3)(x if first else norm_relu(x))
        h = self._conv(filters, 3)(norm_relu(h))
        shortcut = x
        if x.shape[-1] != filters:
          shortcut = group_norm(self.num_groups)(self._conv(filters, 1)(x))
        x = shortcut + h
      filters *= 2
    x = jnp.mean(norm_relu(x), axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01), name='head')(x)


def l2_regularizer(params) -> jax.Array:
  """TFF's penalty: ``1e-4 * sum(w ** 2)`` over the convolution kernels and the dense layer."""
  total = jnp.zeros((), jnp.float32)
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    names = [getattr(p, 'key', None) for p in path]
    if names[-1] == 'kernel' or names[:1] == ['head']:
      total = total + jnp.sum(jnp.square(leaf))
  return L2_WEIGHT_DECAY * total


def resnet18(
    num_classes: int = 100, input_shape: tuple[int, int, int] = (24, 24, 3), num_groups: int = 2
) -> Model:
  """TFF's ResNet-18 with group norm (Reddi et al.'s CIFAR-100 model) and its L2 penalty.

  Args:
    num_classes: outputs (100 for CIFAR-100).
    input_shape: one image, ``(height, width, channels)`` (TFF's CIFAR-100 crop: 24x24x3).
    num_groups: groups per group-norm layer: 2 as the paper (default), 32 as TFF now.
  """
  if len(input_shape) != 3 or min(input_shape) < 1:
    raise ValueError(f'input_shape must be (height, width, channels); got {input_shape}.')
  if input_shape[-1] and 64 % num_groups:
    raise ValueError(f'num_groups must divide 64 (the fewest channels); got {num_groups}.')
  spec = (jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32),
          jax.ShapeDtypeStruct((), jnp.int32))
  return from_linen(ResNet(num_classes, num_groups=num_groups), input_spec=spec,
                    regularizer=l2_regularizer)
