"""Independent NumPy references for the learning tests: plain loops, float64, no JAX.

The model is softmax regression ``logits = x @ W + b`` (the tests' ``dense_model``); the batch loss
is the mean cross-entropy over the batch's examples. Clients are lists of ``(x, y)`` arrays, split
into batches of ``BATCH`` in order (the last batch ragged), exactly as ``Dataset.batch`` does.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import fedjax_like as fl
from fedjax_like.data import Dataset

NUM_FEATURES, NUM_CLASSES, BATCH = 12, 5, 4
TOL = dict(rtol=1e-5, atol=1e-5)


def make_clients(sizes, seed=0, prefix='client'):
  """Datasets of random features and labels, one per size, with client ids ``prefix_i``."""
  rng = np.random.default_rng(seed)
  datasets = []
  for i, n in enumerate(sizes):
    x = rng.normal(size=(n, NUM_FEATURES)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, size=n).astype(np.int32)
    datasets.append(Dataset((x, y), client_id=f'{prefix}_{i}'))
  return datasets


def dense_model():
  module = nn.Dense(NUM_CLASSES)  # random (lecun) kernel: the references start from initialize()
  spec = (jax.ShapeDtypeStruct((NUM_FEATURES,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
  return fl.models.from_linen(module, spec)


def initial_params(process):
  """``(W, b)`` float64 from the process's initial state."""
  p = process.initialize().global_model_weights.trainable
  return np.asarray(p['kernel'], np.float64), np.asarray(p['bias'], np.float64)


def params_of(state):
  p = state.global_model_weights.trainable
  return np.asarray(p['kernel']), np.asarray(p['bias'])


def batches_of(x, y):
  return [(x[s : s + BATCH].astype(np.float64), y[s : s + BATCH]) for s in range(0, len(x), BATCH)]


def softmax(z):
  z = z - z.max(axis=1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=1, keepdims=True)


class Sums:
  """Metric sums over examples, divided once at the end (as the library reports them)."""

  def __init__(self):
    self.loss = self.correct = self.examples = self.batches = 0.0

  def add(self, w, b, xb, yb):
    p = softmax(xb @ w + b)
    self.loss += -np.log(p[np.arange(len(yb)), yb]).sum()
    self.correct += (p.argmax(axis=1) == yb).sum()
    self.examples += len(yb)
    self.batches += 1

  def metrics(self):
    return {
        'loss': self.loss / self.examples,
        'accuracy': self.correct / self.examples,
        'num_examples': self.examples,
        'num_batches': self.batches,
    }


def gradient(w, b, xb, yb):
  """The gradient of the batch's mean cross-entropy: ``(dW, db)``."""
  g = softmax(xb @ w + b)
  g[np.arange(len(yb)), yb] -= 1.0
  g /= len(yb)
  return xb.T @ g, g.sum(axis=0)


def full_gradient(w, b, x, y):
  """The gradient of the client's mean per-example loss over all its data."""
  return gradient(w, b, x.astype(np.float64), y)


def assert_metrics(train, reference, tol=TOL):
  np.testing.assert_allclose(float(train['loss']), reference['loss'], **tol)
  np.testing.assert_allclose(float(train['accuracy']), reference['accuracy'], **tol)
  assert int(train['num_examples']) == reference['num_examples']
  if 'num_batches' in train:
    assert int(train['num_batches']) == reference['num_batches']


def assert_params(state, w, b, tol=TOL):
  got_w, got_b = params_of(state)
  np.testing.assert_allclose(got_w, w, **tol)
  np.testing.assert_allclose(got_b, b, **tol)
