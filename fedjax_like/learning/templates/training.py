"""What a client computes on its own data, as client loops: local training, gradients, metric sums.

Each is the ``start`` (from ``init``) and ``step`` of a
:class:`~fedjax_like.core.engine.ClientLoop` over ONE client's steps; client works
(:mod:`~fedjax_like.learning.templates.client_works`) wrap them with their own ``finish``. The
engine calls ``step`` only on a client's real steps, in order (``batch``: one step's
``(x[B, ...], y[B])``, ``mask``: bool ``[B]``), so padding never changes a result and needs no
code here: weights, optimizer state (momentum included) and sums are exactly those of the real
steps.

Metrics are sums (``loss``, the model's metrics, ``num_examples``, ``num_batches``) divided once,
at the end of the round (:func:`train_metrics`): a metric with its own denominator (a
:class:`~fedjax_like.models.model.Metric` pair, e.g. per-token accuracy) by its summed weight,
the others by ``num_examples``. The ``s``-th real step of a client draws its key as
``fold_in(rng, s)``.

Algorithm variants change the client optimizer, not the loop, with small optax transformations:
:func:`proximal_term` (FedProx), :func:`add_to_gradient` (SCAFFOLD's correction) and
:func:`with_fixed_state` (MimeLite's frozen server optimizer state). The optimizer is rebuilt in
every step from ``context``, a pytree of arrays carried with the loop (the round's learning rate,
the proximal anchor, the correction), so the loop holds no Python object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_like.core import tree
from fedjax_like.models.model import Model, ModelWeights

PyTree = Any


class TrainingCarry(NamedTuple):
  """Local training's loop carry.

  Attributes:
    weights: the broadcast global weights (``non_trainable`` is used by every step).
    params: the trainable weights being trained.
    opt_state: the client optimizer's state.
    sums: ``{'loss', <metrics>, 'num_examples', 'num_batches'}`` summed over the real steps (each
      batch measured before its step, as Keras metrics are).
    rng: the client's key data, or None (no stochastic layers).
    num_steps: int32, real steps taken.
    context: arrays the optimizer is built from (see ``make_optimizer``).
  """

  weights: ModelWeights
  params: PyTree
  opt_state: PyTree
  sums: dict
  rng: jax.Array | None
  num_steps: jax.Array
  context: PyTree


def zero_train_sums(model: Model) -> dict:
  return dict(model.zero_sums(), num_batches=jnp.zeros((), jnp.float32))


def _step_key(rng, num_steps):
  return None if rng is None else jax.random.fold_in(jax.random.wrap_key_data(rng), num_steps)


def batch_gradient(model: Model, params, weights: ModelWeights, batch, mask, key):
  """``(gradient of the batch's mean loss at params, the batch's metric sums + num_batches)``."""

  def loss_fn(p):
    return model.batch_loss(ModelWeights(p, weights.non_trainable), batch, mask, key)

  (_, batch_sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  return grads, dict(batch_sums, num_batches=jnp.any(mask).astype(jnp.float32))


def start_training(model: Model, make_optimizer: Callable, weights: ModelWeights, rng,
                   context: PyTree = ()) -> TrainingCarry:
  """The carry before a client's first step (the client optimizer's state starts fresh)."""
  optimizer = make_optimizer(context)
  return TrainingCarry(
      weights, weights.trainable, optimizer.init(weights.trainable), zero_train_sums(model), rng,
      jnp.zeros((), jnp.int32), context,
  )


def training_step(model: Model, make_optimizer: Callable) -> Callable:
  """``(carry, batch, mask) -> carry``: one optimizer step on the batch's mean loss.

  Args:
    model: the model.
    make_optimizer: ``context -> optax.GradientTransformation`` (``lambda _: optimizer`` for a
      fixed one).
  """

  def step(carry: TrainingCarry, batch, mask) -> TrainingCarry:
    key = _step_key(carry.rng, carry.num_steps)
    grads, batch_sums = batch_gradient(model, carry.params, carry.weights, batch, mask, key)
    updates, opt_state = make_optimizer(carry.context).update(grads, carry.opt_state, carry.params)
    return carry._replace(
        params=optax.apply_updates(carry.params, updates),
        opt_state=opt_state,
        sums=tree.add(carry.sums, batch_sums),
        num_steps=carry.num_steps + 1,
    )

  return step


class GradientCarry(NamedTuple):
  """The full-batch gradient's loop carry: ``sum_b n_b grad_b`` and the metric sums."""

  weights: ModelWeights
  grad_sum: PyTree
  sums: dict
  rng: jax.Array | None
  num_steps: jax.Array


def start_gradient(model: Model, weights: ModelWeights, rng) -> GradientCarry:
  return GradientCarry(
      weights, tree.zeros_like(weights.trainable), zero_train_sums(model), rng,
      jnp.zeros((), jnp.int32),
  )


def gradient_step(model: Model) -> Callable:
  """``(carry, batch, mask) -> carry`` accumulating ``n_b grad(mean loss of batch b)`` at the
  broadcast weights."""

  def step(carry: GradientCarry, batch, mask) -> GradientCarry:
    key = _step_key(carry.rng, carry.num_steps)
    grads, batch_sums = batch_gradient(
        model, carry.weights.trainable, carry.weights, batch, mask, key
    )
    grad_sum = tree.add(carry.grad_sum, tree.scale(grads, batch_sums['num_examples']))
    return carry._replace(
        grad_sum=grad_sum, sums=tree.add(carry.sums, batch_sums), num_steps=carry.num_steps + 1
    )

  return step


def mean_gradient(carry: GradientCarry) -> PyTree:
  """``g = sum_b n_b grad_b / sum_b n_b``: the gradient of the client's mean per-example loss."""
  return tree.divide_by_total(carry.grad_sum, carry.sums['num_examples'])


class EvalCarry(NamedTuple):
  """Evaluation's loop carry: the weights evaluated and the metric sums."""

  weights: ModelWeights
  sums: dict


def eval_step(model: Model) -> Callable:
  """``(carry, batch, mask) -> carry`` adding the batch's metric sums (inference mode)."""

  def step(carry: EvalCarry, batch, mask) -> EvalCarry:
    return carry._replace(sums=tree.add(carry.sums, model.eval_sums(carry.weights, batch, mask)))

  return step


def train_metrics(model: Model, sums: dict) -> dict:
  """Training metrics from summed ``metric_sums``: each divided once by its own denominator
  (``num_examples`` unless the metric carries one), counts as int32."""
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
