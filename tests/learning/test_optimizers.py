"""TFF's optimizer equations, checked step by step against NumPy re-derivations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_like.learning import optimizers

STEPS = 6


def _grads(seed=0):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=(3, 4)).astype(np.float32) * (1 + t) for t in range(STEPS)]


def _run(opt, w0, grads):
  w = jnp.asarray(w0)
  state = opt.init(w)
  out = []
  for g in grads:
    upd, state = opt.update(jnp.asarray(g), state, w)
    w = optax.apply_updates(w, upd)
    out.append(np.asarray(w))
  return out


def _np_adam(w, grads, lr, b1, b2, eps, paper=False):
  a, s, out = np.zeros_like(w), np.zeros_like(w), []
  for t, g in enumerate(grads, 1):
    a = a + (g - a) * (1 - b1)
    s = s + (g**2 - s) * (1 - b2)
    if paper:
      w = w - lr * (a / (1 - b1**t)) / (np.sqrt(s / (1 - b2**t)) + eps)
    else:
      w = w - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * a / (np.sqrt(s) + eps)
    out.append(w)
  return out


def _np_yogi(w, grads, lr, b1, b2, eps, s0, corrected=True):
  a, s, out = np.zeros_like(w), np.full_like(w, s0), []
  for t, g in enumerate(grads, 1):
    a = a + (g - a) * (1 - b1)
    s = s + (1 - b2) * np.sign(g**2 - s) * g**2
    lr_t = lr * np.sqrt(1 - b2**t) / (1 - b1**t) if corrected else lr
    w = w - lr_t * a / (np.sqrt(s) + eps)
    out.append(w)
  return out


def _close(got, want):
  for g, w in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-5)


W0 = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)


@pytest.mark.parametrize('momentum,nesterov', [(None, False), (0.9, False), (0.5, True)])
def test_sgdm(momentum, nesterov):
  lr, w, v, want = 0.1, W0.copy(), np.zeros_like(W0), []
  for g in _grads():
    if momentum:
      v = momentum * v + g
      w = w - lr * (g + momentum * v if nesterov else v)
    else:
      w = w - lr * g
    want.append(w)
  _close(_run(optimizers.build_sgdm(lr, momentum, nesterov), W0, _grads()), want)


def test_adam_defaults_are_tffs_and_epsilon_is_outside_the_uncorrected_sqrt():
  # A large epsilon makes the placement visible: the two forms differ by far more than rtol.
  want = _np_adam(W0, _grads(), 0.05, 0.9, 0.999, 0.5)
  _close(_run(optimizers.build_adam(0.05, epsilon=0.5), W0, _grads()), want)
  paper = _np_adam(W0, _grads(), 0.05, 0.9, 0.999, 0.5, paper=True)
  assert np.abs(paper[-1] - want[-1]).max() > 1e-2
  _close(_run(optimizers.build_adam(0.05, epsilon=0.5, epsilon_placement='paper'), W0, _grads()), paper)
  _close(_run(optimizers.build_adam(0.05), W0, _grads()), _np_adam(W0, _grads(), 0.05, 0.9, 0.999, 1e-7))


def test_adam_paper_form_is_optax_adam():
  got = _run(optimizers.build_adam(0.05, epsilon=0.5, epsilon_placement='paper'), W0, _grads())
  _close(got, _run(optax.adam(0.05, b1=0.9, b2=0.999, eps=0.5), W0, _grads()))


def test_yogi_bias_corrected_rate_and_initial_preconditioner():
  want = _np_yogi(W0, _grads(), 0.05, 0.9, 0.999, 1e-3, 1e-6)
  _close(_run(optimizers.build_yogi(0.05), W0, _grads()), want)
  want = _np_yogi(W0, _grads(), 0.05, 0.8, 0.99, 1e-2, 0.3)
  got = _run(optimizers.build_yogi(0.05, 0.8, 0.99, 1e-2, initial_preconditioner_value=0.3), W0, _grads())
  _close(got, want)


def test_yogi_without_bias_correction_is_the_papers():
  want = _np_yogi(W0, _grads(), 0.05, 0.9, 0.999, 1e-3, 1e-6, corrected=False)
  _close(_run(optimizers.build_yogi(0.05, bias_correction=False), W0, _grads()), want)
  # optax's yogi is neither form (first moment starts at 1e-6, epsilon outside the corrected sqrt).
  assert np.abs(_run(optax.yogi(0.05, eps=1e-3), W0, _grads())[-1] - want[-1]).max() > 1e-3
  corrected = _np_yogi(W0, _grads(), 0.05, 0.9, 0.999, 1e-3, 1e-6)
  assert np.abs(corrected[0] - want[0]).max() > 1e-2  # the correction matters early


def test_adagrad():
  for s0, eps in [(0.1, 1e-7), (0.0, 0.25)]:
    w, s, want = W0.copy(), np.full_like(W0, s0), []
    for g in _grads():
      s = s + g**2
      w = w - 0.1 * g / np.sqrt(s + eps)
      want.append(w)
    _close(_run(optimizers.build_adagrad(0.1, s0, eps), W0, _grads()), want)


def test_rmsprop_epsilon_outside_the_sqrt():
  w, s, want = W0.copy(), np.zeros_like(W0), []
  for g in _grads():
    s = 0.9 * s + 0.1 * g**2
    w = w - 0.01 * g / (np.sqrt(s) + 0.5)
    want.append(w)
  _close(_run(optimizers.build_rmsprop(0.01, 0.9, 0.5), W0, _grads()), want)


def test_schedule_uses_the_zero_based_step():
  rates = lambda count: 0.1 / (1.0 + count)
  lr = [0.1 / (1 + t) for t in range(STEPS)]
  w, a, s, want = W0.copy(), np.zeros_like(W0), np.full_like(W0, 1e-6), []
  for t, g in enumerate(_grads(), 1):
    a = a + (g - a) * 0.1
    s = s + 0.001 * np.sign(g**2 - s) * g**2
    w = w - lr[t - 1] * np.sqrt(1 - 0.999**t) / (1 - 0.9**t) * a / (np.sqrt(s) + 1e-3)
    want.append(w)
  _close(_run(optimizers.build_yogi(rates), W0, _grads()), want)


def test_pytrees_and_jit():
  params = {'a': jnp.ones((2,)), 'b': {'c': jnp.zeros((3, 1))}}
  opt = optimizers.build_yogi(0.1)
  state = opt.init(params)
  upd, state = jax.jit(opt.update)(jax.tree.map(jnp.ones_like, params), state, params)
  assert jax.tree.structure(upd) == jax.tree.structure(params)
  assert int(state.count) == 1
  # A traced learning rate (as for_round builds inside a compiled round).
  f = jax.jit(lambda lr: optimizers.build_adam(lr).update(params, optimizers.build_adam(lr).init(params))[0])
  assert np.isfinite(np.asarray(f(jnp.float32(0.1))['a'])).all()


@pytest.mark.parametrize('build,kwargs,match', [
    (optimizers.build_adam, {'beta_1': 1.5}, 'beta_1'),
    (optimizers.build_adam, {'epsilon': -1.0}, 'epsilon'),
    (optimizers.build_adam, {'epsilon_placement': 'x'}, 'epsilon_placement'),
    (optimizers.build_yogi, {'initial_preconditioner_value': -1.0}, 'initial_preconditioner'),
    (optimizers.build_rmsprop, {'decay': 2.0}, 'decay'),
    (optimizers.build_sgdm, {'nesterov': True}, 'nesterov'),
    (optimizers.build_adagrad, {'learning_rate': -1.0}, 'learning_rate'),
])
def test_bad_hyperparameters(build, kwargs, match):
  with pytest.raises(ValueError, match=match):
    build(**kwargs)
