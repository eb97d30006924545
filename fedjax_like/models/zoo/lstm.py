"""Keras's LSTM layer as a ``flax.linen`` module: Keras's weight layout, gates and initializers.

TFF's recurrent baselines are Keras ``LSTM(units, return_sequences=True)`` layers. :class:`LSTM`
computes exactly what Keras's does (``recurrent_activation='sigmoid'``, ``activation='tanh'``)
with Keras's three weights and their defaults:

- ``kernel`` ``[input, 4 units]`` (glorot-uniform by default; TFF's Shakespeare model uses
  he-normal), ``recurrent_kernel`` ``[units, 4 units]`` (orthogonal), ``bias`` ``[4 units]``
  (zeros, with the forget gate's quarter set to 1: Keras's ``unit_forget_bias=True``);
- gates in Keras's order ``i, f, c, o``: with ``z = x W + h U + b`` split in four,
  ``c' = sigmoid(z_f) c + sigmoid(z_i) tanh(z_c)`` and ``h' = sigmoid(z_o) tanh(c')``,
  from ``h = c = 0``.

Parameters: ``4 units (input + units + 1)``. Input ``[B, T, input]``, output ``[B, T, units]``
(every step's ``h``). The input projection is one matrix product over all steps; the recurrence
is a ``lax.scan`` over time. Keras skips masked steps (``mask_zero`` embeddings): TFF's sequences
are right-padded, so that only changes outputs at padded positions, which no metric or loss of
these tasks counts (see :mod:`fedjax_like.models.metrics`); they are computed here as ordinary
steps.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]


def keras_lstm_bias(units: int) -> Initializer:
  """Keras's ``unit_forget_bias``: zeros, except ones on the forget gate's ``units`` entries."""

  def init(key, shape, dtype=jnp.float32):
    del key
    return jnp.zeros(shape, dtype).at[units : 2 * units].set(1.0)

  return init


def keras_uniform(limit: float = 0.05) -> Initializer:
  """Keras's ``RandomUniform(-limit, limit)`` (its ``Embedding`` default with 0.05)."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -limit, limit)

  return init


class LSTM(nn.Module):
  """``tf.keras.layers.LSTM(units, return_sequences=True)``: ``[B, T, D] -> [B, T, units]``."""

  units: int
  kernel_init: Initializer = nn.initializers.glorot_uniform()
  recurrent_init: Initializer = nn.initializers.orthogonal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    units = self.units
    kernel = self.param('kernel', self.kernel_init, (x.shape[-1], 4 * units))
    recurrent = self.param('recurrent_kernel', self.recurrent_init, (units, 4 * units))
    bias = self.param('bias', keras_lstm_bias(units), (4 * units,))
    projected = jnp.einsum('btd,dg->tbg', x, kernel) + bias  # Time-major for the scan.

    def step(carry, z_x):
      h, c = carry
      z = z_x + h @ recurrent
      i, f, g, o = jnp.split(z, 4, axis=-1)
      c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
      h = jax.nn.sigmoid(o) * jnp.tanh(c)
      return (h, c), h

    zeros = jnp.zeros((x.shape[0], units), projected.dtype)
    _, hs = jax.lax.scan(step, (zeros, zeros), projected)
    return jnp.swapaxes(hs, 0, 1)
