"""TFF's EMNIST character-recognition preprocessing, in NumPy.

Follows ``tensorflow_federated/python/simulation/baselines/emnist/emnist_preprocessing.py``:
shuffle (default buffer 418, the largest client; 1 keeps the stored order), repeat, take
``max_elements``, batch, then map each example to ``(pixels[28, 28, 1] float32, label int32)``
(``tf.expand_dims(pixels, -1)``). The last batch is padded and masked here (smaller in TFF).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedjax_like.data.dataset import BatchedDataset, Dataset
from fedjax_like.simulation.baselines.client_spec import ClientSpec, shuffle_repeat_take

MAX_CLIENT_DATASET_SIZE = 418


def create_preprocess_fn(
    preprocess_spec: ClientSpec, emnist_task: str = 'character_recognition', seed=None
) -> Callable[..., BatchedDataset]:
  """A function from a client's EMNIST examples (``pixels``, ``label``) to its batches.

  Args:
    preprocess_spec: epochs, batch size, example cap and shuffle buffer (default 418).
    emnist_task: ``'character_recognition'`` (TFF's autoencoder task is not provided).
    seed: the shuffle's seed (None: fresh randomness each call).

  Returns:
    ``fn(dataset, seed=None) -> BatchedDataset`` with ``x`` float32 ``[num_batches, batch_size,
    28, 28, 1]`` and ``y`` int32.
  """
  if emnist_task != 'character_recognition':
    raise ValueError("emnist_task must be 'character_recognition' (the autoencoder task is not "
                     'provided).')
  buffer = preprocess_spec.shuffle_buffer_size or MAX_CLIENT_DATASET_SIZE

  def preprocess_fn(dataset: Dataset, seed=seed) -> BatchedDataset:
    fields = {'pixels': np.asarray(dataset.elements['pixels']),
              'label': np.asarray(dataset.elements['label'])}
    selected = shuffle_repeat_take(Dataset(fields), preprocess_spec, buffer, seed).elements
    x = selected['pixels'].astype(np.float32)[..., None]
    y = selected['label'].astype(np.int32)
    return Dataset((x, y), client_id=dataset.client_id).batch(preprocess_spec.batch_size)

  return preprocess_fn
