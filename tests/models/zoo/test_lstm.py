"""Keras's LSTM layer (fedjax_like/models/zoo/lstm.py) against a NumPy loop of Keras's equations."""

import flax.linen as nn
import jax
import numpy as np

from fedjax_like.models.zoo.lstm import LSTM, keras_uniform


def sigmoid(z):
  return 1 / (1 + np.exp(-z))


def test_lstm_matches_kerass_equations_and_initialization():
  layer = LSTM(3)
  x = np.random.default_rng(0).normal(size=(2, 4, 5)).astype(np.float32)
  params = layer.init(jax.random.key(1), x)['params']
  kernel, recurrent, bias = (np.asarray(params[k], np.float64)
                             for k in ('kernel', 'recurrent_kernel', 'bias'))
  assert kernel.shape == (5, 12) and recurrent.shape == (3, 12) and bias.shape == (12,)
  np.testing.assert_array_equal(bias, [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])  # unit_forget_bias
  np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(3), atol=1e-5)  # orthogonal rows
  params = {'kernel': kernel, 'recurrent_kernel': recurrent, 'bias': bias + np.arange(12) / 10}
  out = np.asarray(layer.apply({'params': params}, x))

  h, c = np.zeros((2, 3)), np.zeros((2, 3))
  expected = []
  for t in range(4):
    z = x[:, t].astype(np.float64) @ kernel + h @ recurrent + params['bias']
    i, f, g, o = z[:, 0:3], z[:, 3:6], z[:, 6:9], z[:, 9:12]  # Keras's gate order
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
    expected.append(h)
  np.testing.assert_allclose(out, np.stack(expected, axis=1), atol=1e-5)
  assert 4 * 3 * (5 + 3 + 1) == sum(np.size(v) for v in params.values())


def test_keras_uniform_embedding_initializer():
  table = nn.Embed(1000, 8, embedding_init=keras_uniform()).init(
      jax.random.key(0), np.zeros((1,), np.int32))['params']['embedding']
  assert float(np.min(table)) >= -0.05 and float(np.max(table)) < 0.05
  assert abs(float(np.mean(table))) < 0.002  # uniform(-0.05, 0.05): mean 0, sd 0.029/sqrt(8000)
