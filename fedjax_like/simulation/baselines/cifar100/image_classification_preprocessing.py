"""TFF's CIFAR-100 preprocessing, in NumPy: crops, flips and per-image standardization.

Follows ``tensorflow_federated/python/simulation/baselines/cifar100/
image_classification_preprocessing.py``: shuffle (default buffer 500; 1 keeps the stored order),
repeat, take ``max_elements``, then per image:

1. cast to float32;
2. crop to ``crop_shape``: without distortion the central crop of
   ``tf.image.resize_with_crop_or_pad`` (offsets ``(32 - height) // 2`` and
   ``(32 - width) // 2``; 4 and 4 for TFF's 24x24); with distortion ``tf.image.random_crop``
   (offsets uniform over every position) then ``tf.image.random_flip_left_right`` (probability
   1/2);
3. ``tf.image.per_image_standardization``: ``(x - mean) / max(std, 1 / sqrt(N))`` over the
   image's ``N = height * width * channels`` values (``std`` the population standard deviation);

and batch ``(x float32[h, w, 3], label int64)``. The random crops and flips are drawn from a seeded
NumPy generator (TF's random streams are not reproduced); the eval pipeline is deterministic and
TFF's exactly, up to float32 rounding of the mean and deviation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fedjax_like.data.dataset import BatchedDataset, Dataset
from fedjax_like.simulation.baselines.client_spec import ClientSpec, shuffle_repeat_take

CIFAR_SHAPE = (32, 32, 3)
NUM_EXAMPLES_PER_CLIENT = 500


def per_image_standardization(images: np.ndarray) -> np.ndarray:
  """``tf.image.per_image_standardization`` of ``images[..., h, w, c]``: float32, each image
  with mean 0 and standard deviation 1 (the deviation floored at ``1 / sqrt(h * w * c)``)."""
  images = np.asarray(images, np.float32)
  axes = (-3, -2, -1)
  num_values = int(np.prod(images.shape[-3:]))
  mean = images.mean(axis=axes, keepdims=True, dtype=np.float64)
  std = images.std(axis=axes, keepdims=True, dtype=np.float64)
  adjusted = np.maximum(std, 1.0 / np.sqrt(num_values))
  return ((images - mean) / adjusted).astype(np.float32)


def central_crop(images: np.ndarray, height: int, width: int) -> np.ndarray:
  """``tf.image.resize_with_crop_or_pad`` to a size no larger than the images: a centered crop."""
  top = (images.shape[-3] - height) // 2
  left = (images.shape[-2] - width) // 2
  return images[..., top : top + height, left : left + width, :]


def random_crop_and_flip(images: np.ndarray, height: int, width: int,
                         rng: np.random.Generator) -> np.ndarray:
  """``tf.image.random_crop`` then ``tf.image.random_flip_left_right``, image by image."""
  n = images.shape[0]
  tops = rng.integers(0, images.shape[1] - height + 1, size=n)
  lefts = rng.integers(0, images.shape[2] - width + 1, size=n)
  flips = rng.random(n) < 0.5
  out = np.empty((n, height, width, images.shape[3]), images.dtype)
  for i in range(n):
    crop = images[i, tops[i] : tops[i] + height, lefts[i] : lefts[i] + width]
    out[i] = crop[:, ::-1] if flips[i] else crop
  return out


def create_preprocess_fn(
    preprocess_spec: ClientSpec,
    crop_shape: Sequence[int] = CIFAR_SHAPE,
    distort_image: bool = False,
    seed=None,
) -> Callable[..., BatchedDataset]:
  """A function from a client's CIFAR-100 examples to batched ``(image, label)``.

  Args:
    preprocess_spec: epochs, batch size, example cap and shuffle buffer (default 500).
    crop_shape: ``(height, width, 3)``, at most ``(32, 32, 3)``.
    distort_image: random crops and flips (training) instead of the central crop.
    seed: seeds the shuffle, crops and flips (None: fresh randomness each call).

  Returns:
    ``fn(dataset, seed=None) -> BatchedDataset`` with ``x`` float32 ``[num_batches, batch_size,
    height, width, 3]`` and ``y`` int64 labels.
  """
  crop_shape = tuple(int(c) for c in crop_shape)
  if len(crop_shape) != 3:
    raise ValueError('The crop_shape must have length 3, corresponding to a tensor of shape '
                     '[height, width, channels].')
  if not (1 <= crop_shape[0] <= 32 and 1 <= crop_shape[1] <= 32 and crop_shape[2] == 3):
    raise ValueError(f'crop_shape must be at most (32, 32, 3) with 3 channels; got {crop_shape}.')
  height, width, _ = crop_shape
  buffer = preprocess_spec.shuffle_buffer_size or NUM_EXAMPLES_PER_CLIENT

  def preprocess_fn(dataset: Dataset, seed=seed) -> BatchedDataset:
    rng = np.random.default_rng(seed)
    fields = {'image': np.asarray(dataset.elements['image']),
              'label': np.asarray(dataset.elements['label'])}
    selected = shuffle_repeat_take(Dataset(fields), preprocess_spec, buffer, rng).elements
    images = selected['image'].astype(np.float32)
    if distort_image:
      images = random_crop_and_flip(images, height, width, rng)
    else:
      images = central_crop(images, height, width)
    x = per_image_standardization(images)
    y = selected['label'].astype(np.int64)
    return Dataset((x, y), client_id=dataset.client_id).batch(preprocess_spec.batch_size)

  return preprocess_fn
