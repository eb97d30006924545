"""TFF's EMNIST character-recognition preprocessing (simulation/baselines/emnist/
emnist_preprocessing.py): pixels get a channel axis, labels stay, TFF's order of operations."""

import numpy as np
import pytest

from fedjax_like.data import Dataset
from fedjax_like.simulation.baselines import ClientSpec
from fedjax_like.simulation.baselines.emnist import emnist_preprocessing as prep


def test_pixels_get_a_channel_and_order_is_kept_without_shuffle():
  rng = np.random.default_rng(0)
  data = Dataset({'pixels': rng.random((7, 28, 28)).astype(np.float32),
                  'label': rng.integers(0, 62, size=7).astype(np.int32)})
  spec = ClientSpec(num_epochs=2, batch_size=4, max_elements=10, shuffle_buffer_size=1)
  batched = prep.create_preprocess_fn(spec)(data)
  x, y = batched.batches
  assert x.shape == (3, 4, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int32
  order = (list(range(7)) * 2)[:10]  # repeat, then take 10
  np.testing.assert_array_equal(x[batched.mask][..., 0], data.elements['pixels'][order])
  np.testing.assert_array_equal(y[batched.mask], data.elements['label'][order])
  assert batched.mask.sum() == 10


def test_default_shuffle_is_a_seeded_permutation():
  data = Dataset({'pixels': np.arange(20, dtype=np.float32)[:, None, None] * np.ones((1, 28, 28)),
                  'label': np.arange(20)})
  fn = prep.create_preprocess_fn(ClientSpec(1, 20))
  labels = fn(data, seed=1).batches[1][0]
  assert sorted(labels.tolist()) == list(range(20)) and labels.tolist() != list(range(20))
  np.testing.assert_array_equal(labels, fn(data, seed=1).batches[1][0])
  with pytest.raises(ValueError, match='character_recognition'):
    prep.create_preprocess_fn(ClientSpec(1, 1), 'autoencoder')
