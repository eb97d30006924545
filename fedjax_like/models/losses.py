"""Keras-style losses for models whose output is already a probability distribution.

TFF's quickstart builds ``Dense(10, activation=softmax)`` and trains it with
``tf.keras.losses.SparseCategoricalCrossentropy()``, whose default ``from_logits=False`` takes
probabilities. Ported as is onto the default loss here
(:func:`~fedjax_like.models.softmax_cross_entropy`, which takes logits), softmax would be applied
twice; :class:`SparseCategoricalCrossentropy` is the Keras loss instead, so such a model trains as
it did under TFF::

    model = fl.models.from_linen(KerasStyleModel(), input_spec,
                                 loss_fn=fl.models.SparseCategoricalCrossentropy())

Unlike a Keras loss object it returns one value per example (``[batch]``, Keras'
``reduction='none'``): the library sums them over the real examples of a batch itself.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

EPSILON = 1e-7  # Keras' backend.epsilon()


class SparseCategoricalCrossentropy:
  """Per-example cross-entropy of integer labels: ``tf.keras.losses.SparseCategoricalCrossentropy``.

  With ``from_logits=False`` (Keras' default) the outputs are probabilities ``p[batch, classes]``:
  they are clipped to ``[1e-7, 1 - 1e-7]`` as Keras clips them (so a zero probability gives a
  large finite loss, not inf) and the loss is ``-log(p[label])``. Keras 2's backend (what TFF
  runs) does not renormalize the clipped row, and neither does this. With ``from_logits=True`` it
  is the softmax cross-entropy of logits (the library's default loss).

  Args:
    from_logits: whether the model outputs logits (True) or probabilities (False).

  Call: ``loss(outputs[batch, classes], labels[batch]) -> [batch]``.
  """

  def __init__(self, from_logits: bool = False):
    self.from_logits = bool(from_logits)
    self.__qualname__ = f'SparseCategoricalCrossentropy(from_logits={self.from_logits})'

  def __repr__(self) -> str:
    return self.__qualname__

  def __call__(self, outputs: jax.Array, labels: jax.Array) -> jax.Array:
    labels = labels.astype(jnp.int32)
    if self.from_logits:
      return optax.softmax_cross_entropy_with_integer_labels(outputs, labels)
    probabilities = jnp.clip(outputs, EPSILON, 1.0 - EPSILON)
    picked = jnp.take_along_axis(probabilities, labels[..., None], axis=-1)[..., 0]
    return -jnp.log(picked)
