"""Federated evaluation equals an independent NumPy computation over every test example."""

import jax
import numpy as np

from fedjax_like.models import zoo
from fedjax_like.simulation.evaluation import FederatedEvaluation, sample_test_clients


def _numpy_reference(test, weights):
  kernel = np.asarray(weights.trainable['Dense_0']['kernel'], np.float64)
  bias = np.asarray(weights.trainable['Dense_0']['bias'], np.float64)
  xs, ys = [], []
  for client_id in test.client_ids:
    examples = test.dataset_for_client(client_id).elements
    xs.append(examples['pixels'].reshape(len(examples['label']), -1))
    ys.append(examples['label'])
  x, y = np.concatenate(xs).astype(np.float64), np.concatenate(ys)
  logits = x @ kernel + bias
  logits -= logits.max(axis=1, keepdims=True)
  log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  return (logits.argmax(1) == y).mean(), -log_probs[np.arange(len(y)), y].mean(), len(y)


def test_federated_evaluation_matches_numpy(digits_data):
  _, test = digits_data
  model = zoo.logistic_regression(10)
  weights = model.init_fn(jax.random.key(0))
  rng = np.random.default_rng(0)
  weights = weights._replace(
      trainable=jax.tree.map(
          lambda w: (0.05 * rng.standard_normal(w.shape)).astype(np.float32), weights.trainable
      )
  )
  evaluation = FederatedEvaluation(model, test, batch_size=8, clients_per_chunk=7)
  metrics = jax.device_get(evaluation(weights))
  accuracy, loss, count = _numpy_reference(test, weights)
  assert int(metrics['num_examples']) == count == evaluation.num_examples
  np.testing.assert_allclose(metrics['accuracy'], accuracy, rtol=1e-6)
  np.testing.assert_allclose(metrics['loss'], loss, rtol=1e-5)
  assert evaluation.num_clients == len(test.client_ids)


def test_test_client_subset_is_seeded(digits_data):
  _, test = digits_data
  a = sample_test_clients(test, 10, seed=1)
  assert a == sample_test_clients(test, 10, seed=1) and len(set(a)) == 10
  assert a != sample_test_clients(test, 10, seed=2)
  assert sample_test_clients(test, None, seed=1) == test.client_ids
