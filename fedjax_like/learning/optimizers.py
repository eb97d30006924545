"""Optimizers named as TFF names them, built on optax.

Each ``build_*`` returns an ``optax.GradientTransformation`` (``init(params)``,
``update(grads, state, params)``), usable as a client or server optimizer. ``learning_rate`` may be a
number or an optax schedule (a function of the step count).

Conventions match ``tff.learning.optimizers``:

- ``build_sgdm(lr, momentum)``: ``v <- momentum * v + g``, ``w <- w - lr * v`` (plain SGD when
  momentum is None or 0).
- ``build_adam``, ``build_yogi``, ``build_adagrad``, ``build_rmsprop``: the standard updates with
  TFF's default hyperparameters (e.g. Adam's epsilon 1e-7).

Learning rates by round (``client_learning_rate_fn`` / ``server_learning_rate_fn`` of the
algorithms): pass the optimizer as a function ``learning_rate -> optimizer`` (e.g.
``lambda lr: build_sgdm(lr, momentum=0.9)``) and a schedule ``round_num -> learning_rate`` (any
jnp-traceable function, e.g. ``optax.exponential_decay(0.1, 10, 0.5)``). :func:`for_round` turns
the pair into ``round_num -> optimizer``, built inside the compiled round with the traced rate.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import optax

ScalarOrSchedule = float | Callable[[int], float]


def _check_lr(learning_rate) -> None:
  if isinstance(learning_rate, jax.Array):  # a traced per-round learning rate (see for_round)
    return
  if not callable(learning_rate) and not learning_rate >= 0:
    raise ValueError(f'learning_rate must be a non-negative number or a schedule; got {learning_rate!r}.')


def build_sgdm(learning_rate: ScalarOrSchedule = 0.01, momentum: float | None = None) -> optax.GradientTransformation:
  """SGD with optional heavy-ball momentum."""
  _check_lr(learning_rate)
  if momentum is not None and not 0 <= momentum < 1:
    raise ValueError(f'momentum must be in [0, 1); got {momentum!r}.')
  return optax.sgd(learning_rate, momentum=momentum or None)


def build_adam(
    learning_rate: ScalarOrSchedule = 0.001,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
) -> optax.GradientTransformation:
  """Adam (Kingma & Ba, 2015)."""
  _check_lr(learning_rate)
  return optax.adam(learning_rate, b1=beta_1, b2=beta_2, eps=epsilon)


def build_yogi(
    learning_rate: ScalarOrSchedule = 0.01,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-3,
) -> optax.GradientTransformation:
  """Yogi (Zaheer et al., 2018), as used by FedYogi (Reddi et al., 2020)."""
  _check_lr(learning_rate)
  return optax.yogi(learning_rate, b1=beta_1, b2=beta_2, eps=epsilon)


def build_adagrad(
    learning_rate: ScalarOrSchedule = 0.01,
    initial_preconditioner_value: float = 0.1,
    epsilon: float = 1e-7,
) -> optax.GradientTransformation:
  """Adagrad (Duchi et al., 2011)."""
  _check_lr(learning_rate)
  return optax.adagrad(
      learning_rate, initial_accumulator_value=initial_preconditioner_value, eps=epsilon
  )


def build_rmsprop(
    learning_rate: ScalarOrSchedule = 0.01, decay: float = 0.9, epsilon: float = 1e-7
) -> optax.GradientTransformation:
  """RMSProp."""
  _check_lr(learning_rate)
  return optax.rmsprop(learning_rate, decay=decay, eps=epsilon)


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
