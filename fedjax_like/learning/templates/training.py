"""What a client computes on its own data: local training, full-batch gradients, metric sums.

These are pure functions of ONE client's arrays (``batches``: pytree of ``[num_steps, batch, ...]``,
``mask``: bool ``[num_steps, batch]``); the cohort engine decides how many clients run side by side.
Client works (:mod:`~fedjax_like.learning.templates.client_works`) are written with them.

Padding is inert by construction: a step whose mask is all False keeps the weights *and* the
optimizer state (momentum included) exactly as they were, so padding a client with empty steps
never changes its result. Metrics are sums (``loss``, ``accuracy``, ``num_examples``,
``num_batches``) divided once, at the end of the round (:func:`train_metrics`).

Algorithm variants change the client optimizer, not the loop, with small optax transformations:
:func:`proximal_term` (FedProx), :func:`add_to_gradient` (SCAFFOLD's correction) and
:func:`with_fixed_state` (MimeLite's frozen server optimizer state).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_like.core import cohort, tree
from fedjax_like.models.model import Model, ModelWeights

PyTree = Any


class LocalTrainingResult(NamedTuple):
  """One client's local training.

  Attributes:
    trainable: the trained trainable weights.
    metric_sums: ``{'loss', <metrics>, 'num_examples', 'num_batches'}`` summed over the client's
      steps (each batch measured before its step, as Keras metrics are); ``num_batches`` counts the
      real (non-padding) steps.
    num_examples: real examples processed (float32 scalar).
  """

  trainable: PyTree
  metric_sums: dict
  num_examples: jax.Array


def _real_steps(mask: jax.Array) -> jax.Array:
  """``[num_steps]``: steps holding at least one real example. The engine skips the others (a
  padding step is a no-op either way: weights, optimizer state and sums are kept)."""
  return jnp.any(mask, axis=1)


def _step_keys(rng: jax.Array | None, num_steps: int):
  """Step ``i``'s key is ``fold_in(rng, i)``: it does not depend on how many (padding) steps follow,
  so a client's randomness is the same whether or not the engine cuts its padding steps."""
  if rng is None:
    return jnp.zeros((num_steps,), jnp.uint32)
  return jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(num_steps))


def _batch_gradient(model: Model, params, weights: ModelWeights, batch, batch_mask, key):
  """``(gradient of the batch's mean loss at params, the batch's metric sums + num_batches)``."""

  def loss_fn(p):
    return model.batch_loss(ModelWeights(p, weights.non_trainable), batch, batch_mask, key)

  (_, batch_sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  real = jnp.any(batch_mask)
  return grads, dict(batch_sums, num_batches=real.astype(jnp.float32)), real


def local_training(
    model: Model,
    optimizer: optax.GradientTransformation,
    weights: ModelWeights,
    batches: PyTree,
    mask: jax.Array,
    rng: jax.Array | None = None,
) -> LocalTrainingResult:
  """Trains ``weights`` on one client's batches in order, one optimizer step per batch.

  Args:
    model: the model.
    optimizer: the client optimizer (its state starts fresh for every client and round).
    weights: the broadcast global weights.
    batches: pytree of ``[num_steps, batch_size, ...]`` arrays.
    mask: bool ``[num_steps, batch_size]``.
    rng: a key for stochastic layers (split per step), or None.
  """
  num_steps = mask.shape[0]
  sums0 = dict(model.zero_sums(), num_batches=jnp.zeros((), jnp.float32))

  def step(carry, inputs):
    params, opt_state, sums = carry
    batch, batch_mask, key = inputs
    key = key if rng is not None else None
    grads, batch_sums, real = _batch_gradient(model, params, weights, batch, batch_mask, key)
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    params = tree.where(real, new_params, params)
    opt_state = tree.where(real, new_opt_state, opt_state)
    return params, opt_state, tree.add(sums, batch_sums)

  initial = (weights.trainable, optimizer.init(weights.trainable), sums0)
  params, _, sums = cohort.fold_steps(
      step, initial, (batches, mask, _step_keys(rng, num_steps)), active=_real_steps(mask)
  )
  return LocalTrainingResult(params, sums, sums['num_examples'])


def full_batch_gradient(
    model: Model,
    weights: ModelWeights,
    batches: PyTree,
    mask: jax.Array,
    rng: jax.Array | None = None,
) -> tuple[PyTree, dict]:
  """The gradient of the client's mean per-example loss at ``weights``, over all its batches.

  ``g = sum_b n_b grad(mean loss of batch b) / sum_b n_b``, with the metric sums measured on the
  way (``num_batches`` counts real batches).

  Returns:
    ``(gradient, metric_sums)``; the gradient has the structure of ``weights.trainable``.
  """
  num_steps = mask.shape[0]
  sums0 = dict(model.zero_sums(), num_batches=jnp.zeros((), jnp.float32))

  def step(carry, inputs):
    grad_sum, sums = carry
    batch, batch_mask, key = inputs
    key = key if rng is not None else None
    grads, batch_sums, _ = _batch_gradient(
        model, weights.trainable, weights, batch, batch_mask, key
    )
    grad_sum = tree.add(grad_sum, tree.scale(grads, batch_sums['num_examples']))
    return grad_sum, tree.add(sums, batch_sums)

  initial = (tree.zeros_like(weights.trainable), sums0)
  grad_sum, sums = cohort.fold_steps(
      step, initial, (batches, mask, _step_keys(rng, num_steps)), active=_real_steps(mask)
  )
  return tree.divide_by_total(grad_sum, sums['num_examples']), sums


def eval_sums(model: Model, weights: ModelWeights, batches: PyTree, mask: jax.Array) -> dict:
  """Metric sums of ``weights`` over all of a client's batches (inference mode)."""

  def step(sums, inputs):
    batch, batch_mask = inputs
    return tree.add(sums, model.eval_sums(weights, batch, batch_mask))

  return cohort.fold_steps(step, model.zero_sums(), (batches, mask), active=_real_steps(mask))


def train_metrics(model: Model, sums: dict) -> dict:
  """Training metrics from summed ``metric_sums``: means over examples, counts as int32."""
  train = model.finalize_metrics({k: v for k, v in sums.items() if k != 'num_batches'})
  train['num_batches'] = sums['num_batches'].astype(jnp.int32)
  return train


def proximal_term(anchor: PyTree, strength: float) -> optax.GradientTransformation:
  """``g -> g + mu (w - anchor)``: the gradient of FedProx's ``(mu/2) ||w - anchor||^2``."""

  def update(grads, state, params):
    if params is None:
      raise ValueError('proximal_term needs the params: call update(grads, state, params).')
    pulled = jax.tree.map(lambda g, w, a: g + strength * (w - a), grads, params, anchor)
    return pulled, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def add_to_gradient(correction: PyTree) -> optax.GradientTransformation:
  """``g -> g + correction`` (SCAFFOLD's drift correction ``c - c_i``)."""

  def update(grads, state, params=None):
    del params
    return tree.add(grads, correction), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def with_fixed_state(
    optimizer: optax.GradientTransformation, fixed_state: PyTree
) -> optax.GradientTransformation:
  """``optimizer`` applied with ``fixed_state`` at every step, never updating it (MimeLite)."""

  def update(grads, state, params=None):
    updates, _ = optimizer.update(grads, fixed_state, params)
    return updates, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
