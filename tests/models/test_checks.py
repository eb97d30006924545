"""Build-time model checks: per-example loss and metrics, output shape, softmax outputs, specs."""

import types
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

import fedjax_like as fl

SPEC = (jax.ShapeDtypeStruct((6,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))


class Softmax(nn.Module):
  activation: str = 'softmax'

  @nn.compact
  def __call__(self, x):
    z = nn.Dense(3)(x)
    return jax.jit(nn.softmax)(z) if self.activation == 'softmax' else nn.sigmoid(z)


def mean_loss(outputs, labels):
  return optax.softmax_cross_entropy_with_integer_labels(outputs, labels).mean()


def column_loss(outputs, labels):
  return optax.softmax_cross_entropy_with_integer_labels(outputs, labels)[:, None]


@pytest.mark.parametrize(
    'kwargs, expected',
    [
        ({'loss_fn': mean_loss}, ['loss_fn mean_loss', 'shape ()', "reduction='none'"]),
        ({'loss_fn': column_loss}, ['loss_fn column_loss', 'shape (7, 1)', 'values[:, 0]']),
        (
            {'metric_fns': {'acc': lambda o, y: jnp.mean(jnp.argmax(o, -1) == y)}},
            ["metric 'acc'", 'shape ()', 'astype(jnp.float32)'],
        ),
    ],
)
def test_a_loss_or_metric_must_be_per_example(kwargs, expected):
  for adapter, module in (
      (fl.models.from_linen, nn.Dense(3)),
      (fl.models.from_nnx, lambda rngs: nnx.Linear(6, 3, rngs=rngs)),
  ):
    with pytest.raises(ValueError) as info:
      adapter(module, SPEC, **kwargs)
    for part in expected:
      assert part in str(info.value), str(info.value)


def test_probability_outputs_warn_under_the_logits_loss_only():
  for activation in ('softmax', 'sigmoid'):
    match = f'output is a {activation}.*SparseCategoricalCrossentropy'
    with pytest.warns(UserWarning, match=match):
      fl.models.from_linen(Softmax(activation), SPEC)
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    fl.models.from_linen(Softmax(), SPEC, loss_fn=fl.models.SparseCategoricalCrossentropy())
    fl.models.from_linen(nn.Dense(3), SPEC)  # logits: no warning


class Unflattened(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(x.reshape(x.shape[0], 2, 3))


def test_input_specs_and_outputs_that_do_not_fit_say_why():
  tensor_spec = types.SimpleNamespace(shape=(None, 6), dtype=jnp.float32)  # as TF's TensorSpec
  with pytest.raises(ValueError, match=r'\(None, 6\) has a None axis.*pass \(6,\)'):
    fl.models.from_linen(nn.Dense(3), (tensor_spec, SPEC[1]))
  with pytest.raises(ValueError, match=r"keys \['label', 'pixels'\].*element_spec"):
    fl.models.from_linen(nn.Dense(3), {'pixels': SPEC[0], 'label': SPEC[1]})
  with pytest.raises(ValueError, match=r'softmax_cross_entropy fails.*\(7, 2, 3\).*flatten'):
    fl.models.from_linen(Unflattened(), SPEC)
  spec = {'x': SPEC[0], 'y': SPEC[1]}  # a dict with x and y is fine
  assert fl.models.from_linen(nn.Dense(3), spec).input_spec[0].shape == (6,)
