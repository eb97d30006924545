"""Optimizers named as TFF names them: TFF's update equations and defaults, as optax transformations.

Each ``build_*`` returns an ``optax.GradientTransformation`` (``init(params)``,
``update(grads, state, params) -> (updates, state)``, applied as ``params + updates``), usable as a
client or server optimizer. ``learning_rate`` may be a number or an optax schedule (a function of
the 0-based step count). The equations are those of ``tff.learning.optimizers`` (TFF 0.87), with
``t`` the 1-based step, ``g`` the gradient and every operation elementwise:

- ``build_sgdm(lr, momentum, nesterov)``: ``v <- m v + g``; ``w <- w - lr v`` (``w - lr (g + m v)``
  with Nesterov; plain SGD when momentum is None or 0). optax's ``sgd`` computes exactly this.
- ``build_adam(lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7)``: ``a <- a + (g - a)(1 - b1)``,
  ``s <- s + (g^2 - s)(1 - b2)``, ``lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)``,
  ``w <- w - lr_t a / (sqrt(s) + eps)``. TFF puts epsilon outside the *un-corrected* sqrt(s); the
  paper (and optax's ``adam``) put it outside the corrected sqrt(s / (1 - b2^t)). The paper's form
  is ``epsilon_placement='paper'``.
- ``build_yogi(lr, beta_1=0.9, beta_2=0.999, epsilon=1e-3, initial_preconditioner_value=1e-6)``:
  ``a`` and ``lr_t`` as Adam, ``s <- s + (1 - b2) sign(g^2 - s) g^2`` from ``s_0 =
  initial_preconditioner_value``, ``w <- w - lr_t a / (sqrt(s) + eps)``. TFF bias-corrects the
  rate; the paper's Algorithm 2 does not: ``bias_correction=False``. (optax's ``yogi`` differs
  from both: it starts ``a`` at 1e-6 too and puts epsilon outside the corrected sqrt.)
- ``build_adagrad(lr, initial_preconditioner_value=0.1, epsilon=1e-7)``: ``s <- s + g^2``,
  ``w <- w - lr g / sqrt(s + eps)`` (optax's ``adagrad`` computes exactly this).
- ``build_rmsprop(lr, decay=0.9, epsilon=1e-7)``: ``s <- d s + (1 - d) g^2``,
  ``w <- w - lr g / (sqrt(s) + eps)`` (optax's ``rmsprop`` with epsilon outside the sqrt).

Learning rates by round (``client_learning_rate_fn`` / ``server_learning_rate_fn`` of the
algorithms): pass the optimizer as a function ``learning_rate -> optimizer`` (e.g.
``lambda lr: build_sgdm(lr, momentum=0.9)``) and a schedule ``round_num -> learning_rate`` (any
jnp-traceable function, e.g. ``optax.exponential_decay(0.1, 10, 0.5)``). :func:`for_round` turns
the pair into ``round_num -> optimizer``, built inside the compiled round with the traced rate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

ScalarOrSchedule = float | Callable[[int], float]
PyTree = Any


class MomentsState(NamedTuple):
  """State of Adam and Yogi: the step count and the two moment estimates (TFF's ``accumulator``
  ``a`` and ``preconditioner`` ``s``), each shaped like the parameters."""

  count: jax.Array
  accumulator: PyTree
  preconditioner: PyTree


def _check_lr(learning_rate) -> None:
  if isinstance(learning_rate, jax.Array):  # a traced per-round learning rate (see for_round)
    return
  if not callable(learning_rate) and not learning_rate >= 0:
    raise ValueError(f'learning_rate must be a non-negative number or a schedule; got {learning_rate!r}.')


def _check_unit(name: str, value) -> None:
  if not isinstance(value, jax.Array) and not 0.0 <= value <= 1.0:
    raise ValueError(f'{name} must be in [0, 1]; got {value!r}.')


def _check_nonnegative(name: str, value) -> None:
  if not isinstance(value, jax.Array) and not value >= 0.0:
    raise ValueError(f'{name} must be non-negative; got {value!r}.')


def _rate(learning_rate: ScalarOrSchedule, count: jax.Array) -> jax.Array:
  return learning_rate(count) if callable(learning_rate) else learning_rate


def build_sgdm(
    learning_rate: ScalarOrSchedule = 0.01, momentum: float | None = None, nesterov: bool = False
) -> optax.GradientTransformation:
  """SGD with optional heavy-ball (or Nesterov) momentum, as TFF's ``build_sgdm``."""
  _check_lr(learning_rate)
  if momentum is not None and not isinstance(momentum, jax.Array) and not 0 <= momentum < 1:
    raise ValueError(f'momentum must be in [0, 1); got {momentum!r}.')
  if nesterov and not momentum:
    raise ValueError('nesterov=True needs momentum > 0, e.g. build_sgdm(0.1, momentum=0.9, nesterov=True).')
  return optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov)


def _moments(
    learning_rate, beta_1, beta_2, epsilon, initial_preconditioner_value, second_moment,
    bias_correction: bool, corrected_epsilon: bool,
) -> optax.GradientTransformation:
  """Adam-family update: ``second_moment(s, g) -> s``; the rest is shared."""

  def init(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    s0 = jax.tree.map(lambda p: jnp.full_like(p, initial_preconditioner_value), params)
    return MomentsState(jnp.zeros([], jnp.int32), zeros, s0)

  def update(grads, state, params=None):
    del params
    lr = _rate(learning_rate, state.count)
    step = (state.count + 1).astype(jnp.float32)
    a = jax.tree.map(lambda a, g: a + (g - a) * (1.0 - beta_1), state.accumulator, grads)
    s = jax.tree.map(second_moment, state.preconditioner, grads)
    if corrected_epsilon:  # the paper: a_hat / (sqrt(s_hat) + eps)
      c1, c2 = 1.0 - beta_1**step, 1.0 - beta_2**step
      upd = jax.tree.map(
          lambda a, s: (-lr * (a / c1) / (jnp.sqrt(s / c2) + epsilon)).astype(a.dtype), a, s
      )
    else:
      lr_t = lr * jnp.sqrt(1.0 - beta_2**step) / (1.0 - beta_1**step) if bias_correction else lr
      upd = jax.tree.map(lambda a, s: (-lr_t * a / (jnp.sqrt(s) + epsilon)).astype(a.dtype), a, s)
    return upd, MomentsState(state.count + 1, a, s)

  return optax.GradientTransformation(init, update)


def build_adam(
    learning_rate: ScalarOrSchedule = 0.001,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
    epsilon_placement: str = 'tff',
) -> optax.GradientTransformation:
  """Adam (Kingma & Ba, 2015) with TFF's equations (see the module docstring).

  Args:
    learning_rate: the rate ``lr`` (or a schedule of the step count).
    beta_1, beta_2: decay rates in [0, 1].
    epsilon: non-negative; ``'tff'`` placement adds it to the un-corrected ``sqrt(s)``.
    epsilon_placement: ``'tff'`` (TFF's ``build_adam``) or ``'paper'`` (Kingma & Ba's Algorithm 1,
      epsilon outside ``sqrt(s / (1 - b2^t))``, as optax's ``adam``).
  """
  _check_lr(learning_rate)
  _check_unit('beta_1', beta_1)
  _check_unit('beta_2', beta_2)
  _check_nonnegative('epsilon', epsilon)
  if epsilon_placement not in ('tff', 'paper'):
    raise ValueError(f"epsilon_placement must be 'tff' or 'paper'; got {epsilon_placement!r}.")
  second = lambda s, g: s + (g * g - s) * (1.0 - beta_2)
  return _moments(learning_rate, beta_1, beta_2, epsilon, 0.0, second, True, epsilon_placement == 'paper')


def build_yogi(
    learning_rate: ScalarOrSchedule = 0.01,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-3,
    initial_preconditioner_value: float = 1e-6,
    bias_correction: bool = True,
) -> optax.GradientTransformation:
  """Yogi (Zaheer et al., 2018), as TFF's ``build_yogi`` and FedYogi (Reddi et al., 2021).

  Args:
    learning_rate: the rate ``lr`` (or a schedule of the step count).
    beta_1, beta_2: decay rates in [0, 1].
    epsilon: non-negative, added to ``sqrt(s)``.
    initial_preconditioner_value: ``s_0``, non-negative.
    bias_correction: True (TFF) scales the rate by ``sqrt(1 - b2^t) / (1 - b1^t)``; False is the
      paper's Algorithm 2, without it.
  """
  _check_lr(learning_rate)
  _check_unit('beta_1', beta_1)
  _check_unit('beta_2', beta_2)
  _check_nonnegative('epsilon', epsilon)
  _check_nonnegative('initial_preconditioner_value', initial_preconditioner_value)
  second = lambda s, g: s + (1.0 - beta_2) * jnp.sign(g * g - s) * (g * g)
  return _moments(
      learning_rate, beta_1, beta_2, epsilon, initial_preconditioner_value, second,
      bias_correction, False,
  )


def build_adagrad(
    learning_rate: ScalarOrSchedule = 0.01,
    initial_preconditioner_value: float = 0.1,
    epsilon: float = 1e-7,
) -> optax.GradientTransformation:
  """Adagrad (Duchi et al., 2011) as TFF's: ``s <- s + g^2``, ``w <- w - lr g / sqrt(s + eps)``."""
  _check_lr(learning_rate)
  _check_nonnegative('initial_preconditioner_value', initial_preconditioner_value)
  _check_nonnegative('epsilon', epsilon)
  return optax.adagrad(
      learning_rate, initial_accumulator_value=initial_preconditioner_value, eps=epsilon
  )


def build_rmsprop(
    learning_rate: ScalarOrSchedule = 0.01, decay: float = 0.9, epsilon: float = 1e-7
) -> optax.GradientTransformation:
  """RMSProp as TFF's: ``s <- d s + (1 - d) g^2``, ``w <- w - lr g / (sqrt(s) + eps)``."""
  _check_lr(learning_rate)
  _check_unit('decay', decay)
  _check_nonnegative('epsilon', epsilon)
  return optax.rmsprop(learning_rate, decay=decay, eps=epsilon, eps_in_sqrt=False)


def as_transformation(optimizer, role: str) -> optax.GradientTransformation:
  """Accepts an optax transformation or a zero-argument function returning one (TFF's older API)."""
  if isinstance(optimizer, optax.GradientTransformation):
    return optimizer
  if callable(optimizer):
    built = optimizer()
    if isinstance(built, optax.GradientTransformation):
      return built
  raise TypeError(
      f'{role} must be an optimizer such as build_sgdm(learning_rate=0.1) (an optax '
      f'GradientTransformation) or a function returning one; got {optimizer!r}.'
  )


def for_round(
    optimizer_fn, learning_rate_fn: Callable | None, role: str
) -> Callable[[jax.Array], optax.GradientTransformation]:
  """``round_num -> optimizer``: fixed, or rebuilt each round with ``learning_rate_fn(round_num)``.

  Args:
    optimizer_fn: an optimizer (or zero-argument function) when ``learning_rate_fn`` is None;
      otherwise a function ``learning_rate -> optimizer``.
    learning_rate_fn: None, or ``round_num -> learning_rate`` (traced with JAX).
    role: the argument's name, for error messages (``'client_optimizer_fn'``).
  """
  if learning_rate_fn is None:
    optimizer = as_transformation(optimizer_fn, role)
    return lambda round_num: optimizer
  if not callable(learning_rate_fn):
    raise TypeError(f'The learning-rate schedule for {role} must be a function round -> rate.')
  if isinstance(optimizer_fn, optax.GradientTransformation) or not callable(optimizer_fn):
    raise TypeError(
        f'With a learning-rate schedule, {role} must be a function learning_rate -> optimizer, '
        f'e.g. lambda lr: build_sgdm(lr); got {optimizer_fn!r}.'
    )
  probe = optimizer_fn(learning_rate_fn(0))
  if not isinstance(probe, optax.GradientTransformation):
    raise TypeError(f'{role}(learning_rate) must return an optimizer; got {probe!r}.')
  return lambda round_num: optimizer_fn(learning_rate_fn(round_num))
