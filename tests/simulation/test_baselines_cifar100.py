"""TFF's CIFAR-100 preprocessing (simulation/baselines/cifar100/
image_classification_preprocessing.py): crops, flips and per-image standardization against NumPy
re-derivations and TF's documented values."""

import numpy as np
import pytest

from fedjax_like.data import Dataset
from fedjax_like.simulation.baselines import ClientSpec
from fedjax_like.simulation.baselines.cifar100 import image_classification_preprocessing as prep


def standardize(image):
  """(x - mean) / max(std, 1/sqrt(N)) over one image, in float64, by plain loops over values."""
  values = [float(v) for v in np.asarray(image).reshape(-1)]
  mean = sum(values) / len(values)
  std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
  return (np.asarray(image, np.float64) - mean) / max(std, 1 / len(values) ** 0.5)


def client(n=5, seed=0):
  rng = np.random.default_rng(seed)
  return Dataset({'image': rng.integers(0, 256, size=(n, 32, 32, 3)).astype(np.uint8),
                  'label': rng.integers(0, 100, size=n), 'coarse_label': np.zeros(n, int)})


def test_per_image_standardization_documented_example():
  # tf.image.per_image_standardization's docstring: np.arange(1, 13) as a [2, 2, 3] image.
  out = prep.per_image_standardization(np.arange(1, 13).reshape(2, 2, 3))
  np.testing.assert_allclose(out.reshape(-1)[:3], [-1.593255, -1.3035723, -1.0138896], rtol=1e-6)
  flat = prep.per_image_standardization(np.full((4, 4, 3), 7.0))
  assert not flat.any()  # A uniform image: the floored deviation keeps it finite (zeros).


def test_eval_pipeline_is_a_central_crop_standardized():
  data = client()
  spec = ClientSpec(1, 2, shuffle_buffer_size=1)
  batched = prep.create_preprocess_fn(spec, (24, 24, 3))(data)
  x, y = batched.batches
  assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape[1:] == (2, 24, 24, 3)
  for i, (gx, gy) in enumerate(zip(x[batched.mask], y[batched.mask], strict=True)):
    crop = data.elements['image'][i, 4:28, 4:28, :]  # (32 - 24) // 2 = 4 on each axis
    np.testing.assert_allclose(gx, standardize(crop), atol=2e-5)
    assert gy == data.elements['label'][i]
  odd = prep.create_preprocess_fn(spec, (5, 7, 3))(data).batches[0][0, 0]
  np.testing.assert_allclose(odd, standardize(data.elements['image'][0, 13:18, 12:19]), atol=2e-5)


def candidate_windows(image):
  """Every 24x24 window of a 32x32 image, unflipped then flipped, standardized in NumPy (float64):
  ``[9 tops, 9 lefts, 2 flips, 24, 24, 3]``."""
  windows = np.stack([np.stack([image[t:t + 24, c:c + 24] for c in range(9)]) for t in range(9)])
  both = np.stack([windows, windows[..., :, ::-1, :]], axis=2).astype(np.float64)
  mean = both.mean(axis=(-3, -2, -1), keepdims=True)
  std = both.std(axis=(-3, -2, -1), keepdims=True)
  return (both - mean) / np.maximum(std, 1 / np.sqrt(24 * 24 * 3))


def test_distortion_is_a_seeded_random_crop_and_flip():
  data = client(n=100, seed=1)
  spec = ClientSpec(1, 100, shuffle_buffer_size=1)
  fn = prep.create_preprocess_fn(spec, (24, 24, 3), distort_image=True)
  out = fn(data, seed=3).batches[0][0]
  np.testing.assert_array_equal(out, fn(data, seed=3).batches[0][0])
  assert not np.array_equal(out, fn(data, seed=4).batches[0][0])
  flips, tops = 0, []
  for i in range(100):
    errors = np.abs(candidate_windows(data.elements['image'][i]) - out[i]).max(axis=(-3, -2, -1))
    found = np.argwhere(errors < 2e-5)
    assert len(found) == 1  # Exactly one crop window and orientation explains each image.
    top, _, flip = found[0]
    flips += flip
    tops.append(top)
  # Flips ~ Binomial(100, 1/2): sd 5, so 50 +- 20 is 4 sd. Offsets uniform on 0..8 each.
  assert 30 <= flips <= 70
  assert set(tops) == set(range(9))


def test_bad_crop_shapes():
  with pytest.raises(ValueError, match='length 3'):
    prep.create_preprocess_fn(ClientSpec(1, 1), (24, 24))
  with pytest.raises(ValueError, match='at most'):
    prep.create_preprocess_fn(ClientSpec(1, 1), (33, 24, 3))
