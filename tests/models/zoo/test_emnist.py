"""The EMNIST classifiers (fedjax_like/models/zoo/emnist.py) and the zoo's registry: architectures,
sizes and dropout as published."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_like.models import zoo


def _num_params(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_emnist_cnn_is_reddi_et_al():
  model = zoo.emnist_cnn(62)
  weights = model.init_fn(jax.random.key(0))
  # conv 3x3x1x32 + conv 3x3x32x64 + dense 9216x128 + dense 128x62, with biases.
  assert _num_params(weights.trainable) == 320 + 18_496 + 1_179_776 + 7_998 == 1_206_590
  assert model.input_spec[0].shape == (28, 28, 1) and model.num_outputs == 62
  assert zoo.create_model('cnn', 10).num_outputs == 10


def test_cnn_dropout_only_when_training():
  model = zoo.emnist_cnn(10)
  weights = model.init_fn(jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
  inference = [model.apply_fn(weights, x, None, False) for _ in range(2)]
  np.testing.assert_array_equal(inference[0], inference[1])
  a = model.apply_fn(weights, x, jax.random.key(2), True)
  b = model.apply_fn(weights, x, jax.random.key(3), True)
  assert not np.allclose(a, b)


def test_logistic_regression_is_the_seed_model():
  model = zoo.logistic_regression()
  weights = model.init_fn(jax.random.key(0))
  assert _num_params(weights.trainable) == 7850
  assert not np.any(np.asarray(weights.trainable['Dense_0']['kernel']))
  assert model.input_spec[0].shape == (784,)


def test_mlp_is_two_hidden_layers_of_200():
  model = zoo.mlp()
  weights = model.init_fn(jax.random.key(0))
  assert _num_params(weights.trainable) == 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10
  logits = model.apply_fn(weights, jnp.zeros((2, 784)), None, False)
  assert logits.shape == (2, 10)


def test_unknown_model_names_the_choices():
  with pytest.raises(ValueError, match=r"Unknown model 'vit'.*'cnn'"):
    zoo.create_model('vit', 10)


def test_fedavg_cnn_is_mcmahan_et_al():
  model = zoo.fedavg_cnn(10)
  weights = jax.eval_shape(model.init_fn, jax.random.key(0))
  # conv 5x5x1x32 + conv 5x5x32x64 + dense 3136x512 + dense 512x10, with biases: the count
  # McMahan et al. 2017 and TFF's create_original_fedavg_cnn_model docstring give.
  expected = (25 * 32 + 32) + (25 * 32 * 64 + 64) + (3136 * 512 + 512) + (512 * 10 + 10)
  assert _num_params(weights.trainable) == expected == 1_663_370
  assert zoo.create_model('fedavg_cnn', 62).num_outputs == 62


def test_existing_names_stay_importable():
  from fedjax_like.models.zoo import MLP, EmnistCnn, LogisticRegression  # noqa: F401
  assert set(zoo.MODELS) >= {'logistic', 'mlp', 'cnn', 'fedavg_cnn', 'resnet18'}
