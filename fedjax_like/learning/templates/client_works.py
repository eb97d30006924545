"""Client work: what one client does with the broadcast model and its own data.

:func:`local_training` runs the client optimizer over the client's batches in order (one step per
batch) and returns the trained weights with the training metrics as sums. It is a pure function of
one client's arrays; the cohort engine decides how many clients run side by side.

Padding is inert by construction: a step whose mask is all False keeps the weights *and* the
optimizer state (momentum included) exactly as they were, so padding a client with empty steps
never changes its result.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_like.core import cohort, tree
from fedjax_like.models.model import Model, ModelWeights

PyTree = Any


class ClientOutput(NamedTuple):
  """One client's result.

  Attributes:
    update: trained trainable weights minus the broadcast ones (the model delta).
    metric_sums: ``{'loss', <metrics>, 'num_examples', 'num_batches'}`` summed over the client's
      training steps (computed on each batch before its step, as Keras metrics are).
    num_examples: real examples processed (float scalar).
  """

  update: PyTree
  metric_sums: dict
  num_examples: jax.Array


def local_training(
    model: Model,
    optimizer: optax.GradientTransformation,
    weights: ModelWeights,
    batches: PyTree,
    mask: jax.Array,
    rng: jax.Array | None = None,
) -> ClientOutput:
  """Trains ``weights`` on one client's batches with ``optimizer``.

  Args:
    model: the model.
    optimizer: the client optimizer (its state starts fresh for every client and round).
    weights: the broadcast global weights.
    batches: pytree of ``[num_steps, batch_size, ...]`` arrays.
    mask: bool ``[num_steps, batch_size]``.
    rng: a key for stochastic layers (folded in with the step index), or None.

  Returns:
    A :class:`ClientOutput`.
  """
  num_steps = mask.shape[0]
  step_keys = (
      jax.random.split(rng, num_steps) if rng is not None else jnp.zeros((num_steps,), jnp.uint32)
  )
  sums0 = dict(model.zero_sums(), num_batches=jnp.zeros((), jnp.float32))

  def step(carry, inputs):
    params, opt_state, sums = carry
    batch, batch_mask, key = inputs
    key = key if rng is not None else None

    def loss_fn(p):
      return model.batch_loss(ModelWeights(p, weights.non_trainable), batch, batch_mask, key)

    (_, batch_sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    real = jnp.any(batch_mask)
    params = tree.where(real, new_params, params)
    opt_state = tree.where(real, new_opt_state, opt_state)
    batch_sums = dict(batch_sums, num_batches=real.astype(jnp.float32))
    return params, opt_state, tree.add(sums, batch_sums)

  initial = (weights.trainable, optimizer.init(weights.trainable), sums0)
  active = jnp.any(mask, axis=1)  # padding steps are skipped (a no-op even when computed)
  params, _, sums = cohort.fold_steps(step, initial, (batches, mask, step_keys), active=active)
  return ClientOutput(tree.sub(params, weights.trainable), sums, sums['num_examples'])
