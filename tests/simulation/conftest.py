"""Shared fixtures for the driver's tests: a small offline federation and a model with dropout."""

import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import fedjax_like as fl

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # task_files.py


class DropoutMLP(nn.Module):
  """Small enough to compile in a second; dropout makes the round's random key matter."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.Dense(16)(x.reshape((x.shape[0], -1))))
    x = nn.Dropout(0.5, deterministic=not train)(x)
    return nn.Dense(10)(x)


@pytest.fixture(scope='session')
def digits_data():
  """``(train, test)`` offline digits over 30 clients."""
  return fl.data.digits.load_data(num_clients=30, alpha=0.5, seed=0)


@pytest.fixture(scope='session')
def dropout_model():
  spec = (jax.ShapeDtypeStruct((784,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
  return fl.models.from_linen(DropoutMLP(), input_spec=spec)


@pytest.fixture(scope='session')
def dropout_process(dropout_model):
  """FedAvg (client SGD 0.05) on the dropout MLP: one process, so compiled rounds are reused."""
  return fl.learning.algorithms.build_weighted_fed_avg(
      dropout_model, fl.learning.optimizers.build_sgdm(0.05), seed=3
  )
