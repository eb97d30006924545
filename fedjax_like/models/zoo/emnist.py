"""Image classifiers for EMNIST-shaped inputs, as ``flax.linen`` modules and ``Model``s.

- :class:`LogisticRegression`: the seed quickstart's ``Dense(num_classes)`` with zero-initialized
  kernel, on flattened ``[784]`` pixels.
- :class:`MLP`: the "2NN" of McMahan et al. 2017 (TFF's EMNIST ``2nn``): two hidden ReLU layers
  of 200 units.
- :class:`EmnistCnn`: the EMNIST CNN of Reddi et al. 2020 ("Adaptive Federated Optimization"),
  TFF's ``create_conv_dropout_model`` (``cnn_dropout``): conv3x3 32 ReLU, conv3x3 64 ReLU,
  max-pool 2x2, dropout 0.25, flatten, dense 128 ReLU, dropout 0.5, dense ``num_classes``
  (62 for EMNIST, 10 for digits).
- :class:`FedAvgCnn`: the CNN of McMahan et al. 2017, TFF's ``create_original_fedavg_cnn_model``
  (``cnn``): conv5x5 32 'same' ReLU, max-pool 2x2 'same', conv5x5 64 'same' ReLU, max-pool, dense
  512 ReLU, dense ``num_classes`` (1,663,370 parameters at 10 classes, as the paper and TFF say).

Kernels use Keras's default Glorot-uniform initialization, as TFF's Keras models do. The builders
(``logistic_regression``, ``mlp``, ``emnist_cnn``, ``fedavg_cnn``) return a
:class:`~fedjax_like.models.model.Model` whose ``input_spec`` is one EMNIST example: ``x`` float32
``[784]`` for the dense models and ``[28, 28, 1]`` for the CNNs, ``y`` an int32 scalar label. TFF's
models end in a softmax and use ``SparseCategoricalCrossentropy()``; these output the logits and use
the softmax cross-entropy of the logits, which is what Keras computes from a softmax layer's output.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedjax_like.models.flax import from_linen
from fedjax_like.models.model import Model

_GLOROT = nn.initializers.glorot_uniform()


def _label_spec() -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct((), jnp.int32)


class LogisticRegression(nn.Module):
  """``Dense(num_classes)`` on flattened inputs, zero-initialized (the seed quickstart's model)."""

  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``x[batch, ...] -> logits[batch, num_classes]``."""
    x = x.reshape((x.shape[0], -1))
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros)(x)


class MLP(nn.Module):
  """Hidden ReLU layers (default two of 200 units, McMahan et al. 2017's 2NN), then logits."""

  num_classes: int = 10
  hidden_sizes: Sequence[int] = (200, 200)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``x[batch, ...] -> logits[batch, num_classes]``."""
    x = x.reshape((x.shape[0], -1))
    for size in self.hidden_sizes:
      x = nn.relu(nn.Dense(size, kernel_init=_GLOROT)(x))
    return nn.Dense(self.num_classes, kernel_init=_GLOROT)(x)


class EmnistCnn(nn.Module):
  """The CNN with dropout of Reddi et al. 2020 for EMNIST (1,206,590 parameters at 62 classes)."""

  num_classes: int = 62

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """``x[batch, 28, 28, 1]`` (or ``[batch, 28, 28]``) ``-> logits[batch, num_classes]``.

    Dropout is active only with ``train=True`` (the adapter passes it, with a ``'dropout'`` key,
    during client training).
    """
    if x.ndim == 3:
      x = x[..., None]
    x = nn.relu(nn.Conv(32, (3, 3), padding='VALID', kernel_init=_GLOROT)(x))
    x = nn.relu(nn.Conv(64, (3, 3), padding='VALID', kernel_init=_GLOROT)(x))
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = nn.Dropout(0.25, deterministic=not train)(x)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(128, kernel_init=_GLOROT)(x))
    x = nn.Dropout(0.5, deterministic=not train)(x)
    return nn.Dense(self.num_classes, kernel_init=_GLOROT)(x)


class FedAvgCnn(nn.Module):
  """The CNN of McMahan et al. 2017 (1,663,370 parameters at 10 classes)."""

  num_classes: int = 62

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``x[batch, 28, 28, 1]`` (or ``[batch, 28, 28]``) ``-> logits[batch, num_classes]``."""
    if x.ndim == 3:
      x = x[..., None]
    for filters in (32, 64):
      x = nn.relu(nn.Conv(filters, (5, 5), padding='SAME', kernel_init=_GLOROT)(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding='SAME')
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(512, kernel_init=_GLOROT)(x))
    return nn.Dense(self.num_classes, kernel_init=_GLOROT)(x)


def logistic_regression(num_classes: int = 10) -> Model:
  """The seed's model: ``Dense(num_classes)``, zero kernel; ``x`` float32 ``[784]``."""
  spec = (jax.ShapeDtypeStruct((784,), jnp.float32), _label_spec())
  return from_linen(LogisticRegression(num_classes), input_spec=spec)


def mlp(num_classes: int = 10, hidden_sizes: Sequence[int] = (200, 200)) -> Model:
  """The 2-layer MLP (2NN); ``x`` float32 ``[784]``."""
  spec = (jax.ShapeDtypeStruct((784,), jnp.float32), _label_spec())
  return from_linen(MLP(num_classes, tuple(hidden_sizes)), input_spec=spec)


def emnist_cnn(num_classes: int = 62) -> Model:
  """The EMNIST CNN of Reddi et al. 2020; ``x`` float32 ``[28, 28, 1]``."""
  spec = (jax.ShapeDtypeStruct((28, 28, 1), jnp.float32), _label_spec())
  return from_linen(EmnistCnn(num_classes), input_spec=spec)


def fedavg_cnn(num_classes: int = 62) -> Model:
  """The CNN of McMahan et al. 2017; ``x`` float32 ``[28, 28, 1]``."""
  spec = (jax.ShapeDtypeStruct((28, 28, 1), jnp.float32), _label_spec())
  return from_linen(FedAvgCnn(num_classes), input_spec=spec)
