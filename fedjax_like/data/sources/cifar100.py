"""Federated CIFAR-100 exactly as TensorFlow Federated serves it, read without TensorFlow.

``load_data()`` returns ``(train, test)`` :class:`ClientData` matching
``tff.simulation.datasets.cifar100.load_data``: 500 train clients and 100 test clients, 100
examples each (a Pachinko-allocation partition of CIFAR-100's train and test sets), with string
ids ``'0'``-``'499'`` and ``'0'``-``'99'`` in Python-``sorted`` order (``'0', '1', '10', '100',
...``), each client's examples in TFF's order. Each example, in TFF's (lexicographic) key order:

* ``coarse_label``: int64 scalar in [0, 20)
* ``image``: uint8 ``[32, 32, 3]``, RGB in [0, 255]
* ``label``: int64 scalar in [0, 100)

The file is TFF's ``cifar100.sqlite.lzma`` (``_RELEASE.url``), in TFF's SqlClientData schema
(:mod:`.sql_client_data`) with splits ``train`` and ``test``; each row's ``tf.train.Example`` stores
all three features as int64 lists (the image as 3,072 row-major values), and TFF casts the image to
uint8. It is looked for in ``cache_dir`` (default ``$FEDJAX_LIKE_CACHE/cifar100`` or
``~/.cache/fedjax_like/cifar100``) as ``cifar100.sqlite``, else as ``cifar100.sqlite.lzma``, else
downloaded (:mod:`.download`: resumable, checked, atomic).
"""

from __future__ import annotations

import os

import numpy as np

from fedjax_like.data.client_data import ClientData
from fedjax_like.data.sources import download, sql_client_data
from fedjax_like.data.sources.tf_example import FixedLenFeature

# TFF publishes no size or checksum for this file; a fresh copy is checked by its schema and counts.
_RELEASE = download.Release(download.BASE_URL + 'cifar100.sqlite.lzma')
_SPLITS = ('train', 'test')
_NUM_CLIENTS = {'train': 500, 'test': 100}
_IMAGE_SHAPE = (32, 32, 3)
_SPEC = {
    'coarse_label': FixedLenFeature((), 'int64'),
    'image': FixedLenFeature(_IMAGE_SHAPE, 'int64'),
    'label': FixedLenFeature((), 'int64'),
}


def _cast_image(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """TFF's ``tf.cast(image, tf.uint8)``: int64 to uint8, keeping the low 8 bits."""
  return {**arrays, 'image': arrays['image'].astype(np.uint8)}


def load_data(
    cache_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> tuple[ClientData, ClientData]:
  """Federated CIFAR-100 ``(train, test)``, as TFF's ``cifar100.load_data(cache_dir)``.

  Args:
    cache_dir: where ``cifar100.sqlite`` is (or goes); defaults to
      ``$FEDJAX_LIKE_CACHE/cifar100`` or ``~/.cache/fedjax_like/cifar100``.
    download: fetch the file when it is not cached. With False, a missing file raises at once.

  Returns:
    ``(train, test)`` ClientData (500 and 100 clients); a client's dataset is
    ``{'coarse_label': int64[n], 'image': uint8[n, 32, 32, 3], 'label': int64[n]}``.

  Raises:
    DatasetNotFoundError: not cached and not downloaded; the message names the file, the path to
      put it at and the URL.
    CorruptDatasetError: a cached file is damaged or not in TFF's schema.
  """
  return sql_client_data.load_release(
      _RELEASE,
      cache_dir,
      name='cifar100',
      what='Federated CIFAR-100',
      splits=_SPLITS,
      spec=_SPEC,
      postprocess=_cast_image,
      num_clients=_NUM_CLIENTS,
      allow_download=download,
  )
