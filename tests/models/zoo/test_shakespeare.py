"""TFF's Shakespeare character LSTM (fedjax_like/models/zoo/shakespeare.py): sizes as published,
and the task's loss and metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_like.models import zoo


def shapes(model):
  weights = jax.eval_shape(model.init_fn, jax.random.key(0))
  return jax.tree.map(lambda s: s.shape, weights.trainable)


def test_architecture_and_parameter_count():
  model = zoo.shakespeare_char_lstm()
  params = shapes(model)
  assert params['Embed_0']['embedding'] == (90, 8)
  assert params['LSTM_0']['kernel'] == (8, 1024) and params['LSTM_1']['kernel'] == (256, 1024)
  embed = 90 * 8
  lstm1 = 4 * 256 * (8 + 256 + 1)  # Keras: 4 units (input + units + 1)
  lstm2 = 4 * 256 * (256 + 256 + 1)
  dense = 256 * 90 + 90
  leaves = jax.tree.leaves(params, is_leaf=lambda s: isinstance(s, tuple))
  count = sum(int(np.prod(s)) for s in leaves)
  assert count == embed + lstm1 + lstm2 + dense == 820_522
  assert model.input_spec[0].shape == (80,) and model.num_outputs == 90


def test_task_metrics_mask_padding():
  model = zoo.shakespeare_char_lstm(sequence_length=6)
  assert set(model.metric_fns) == {'num_tokens', 'accuracy'}
  weights = jax.jit(model.init_fn)(jax.random.key(0))
  x = jnp.array([[88, 5, 6, 89, 0, 0], [88, 7, 8, 9, 10, 11]])
  y = jnp.array([[5, 6, 89, 0, 0, 0], [7, 8, 9, 10, 11, 12]])
  sums = jax.jit(model.eval_sums)(weights, (x, y), jnp.array([True, True]))
  out = model.finalize_metrics(sums)
  assert int(out['num_tokens']) == 3 + 6
  logits = np.asarray(jax.jit(model.apply_fn, static_argnums=(2, 3))(weights, x, None, False))
  correct = ((logits.argmax(-1) == np.asarray(y)) & (np.asarray(y) != 0)).sum()
  np.testing.assert_allclose(out['accuracy'], correct / 9, rtol=1e-6)
  with pytest.raises(ValueError, match='sequence_length'):
    zoo.shakespeare_char_lstm(sequence_length=0)
