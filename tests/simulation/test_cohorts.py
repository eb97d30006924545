"""A round's cohort on the host: seeded per (run, round, client) shuffles, buckets, packing."""

import numpy as np

from fedjax_like.data.client_data import ClientData
from fedjax_like.models import zoo
from fedjax_like.simulation.cohorts import ClientPreprocess, pack_round, step_bucket


def _client_data():
  rng = np.random.default_rng(0)
  clients = {}
  for i, n in enumerate([7, 23, 41]):
    clients[f'c{i}'] = {
        'pixels': rng.random((n, 28, 28)).astype(np.float32),
        'label': np.arange(n, dtype=np.int32) % 10,
    }
  return ClientData.from_clients_dict(clients)


def test_step_bucket_rounds_up_with_at_most_half_padding():
  assert [step_bucket(n) for n in (1, 2, 3, 4, 5, 6, 7, 9, 13, 17, 25, 33)] == [
      1,
      2,
      3,
      4,
      6,
      6,
      8,
      12,
      16,
      24,
      32,
      48,
  ]
  for n in range(1, 500):
    assert n <= step_bucket(n) <= max(1.5 * n, n + 1)


def test_preprocess_is_seeded_by_run_round_and_client():
  data = _client_data()
  model = zoo.logistic_regression()
  preprocess = ClientPreprocess.for_model(model, batch_size=5, num_epochs=3, seed=11)
  dataset = data.dataset_for_client('c1')
  first = preprocess(dataset, round_num=4)
  again = preprocess(data.dataset_for_client('c1'), round_num=4)
  np.testing.assert_array_equal(first.batches[0], again.batches[0])
  other_round = preprocess(dataset, round_num=5)
  assert not np.array_equal(first.batches[1], other_round.batches[1])

  x, y = first.batches
  assert x.shape == (
      14,
      5,
      784,
  )  # ceil(3 * 23 / 5) and x.dtype == np.float32 and y.dtype == np.int32
  assert first.num_examples == 3 * 23
  flat_y = y.reshape(-1)[first.mask.reshape(-1)]
  epochs = flat_y.reshape(3, 23)
  for epoch in epochs:  # every epoch is a permutation of the client's examples
    np.testing.assert_array_equal(np.sort(epoch), np.sort(dataset.elements['label']))
  assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch


def test_max_examples_takes_a_seeded_subset():
  data = _client_data()
  preprocess = ClientPreprocess.for_model(
      zoo.emnist_cnn(10), batch_size=4, num_epochs=1, seed=0, max_examples=10
  )
  batches = preprocess(data.dataset_for_client('c2'), round_num=1)
  assert batches.num_examples == 10
  assert batches.batches[0].shape[2:] == (28, 28, 1)


def test_pack_round_buckets_the_step_count():
  data = _client_data()
  preprocess = ClientPreprocess.for_model(zoo.logistic_regression(), batch_size=5, seed=0)
  packed = pack_round(data, ['c0', 'c2'], 1, preprocess)
  assert packed.client_ids == ('c0', 'c2')
  assert packed.num_steps == step_bucket(9) == 12  # the longest client has ceil(41 / 5) = 9
  assert packed.num_examples.tolist() == [7, 41]
