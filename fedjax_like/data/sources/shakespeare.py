"""Federated Shakespeare exactly as TensorFlow Federated serves it, read without TensorFlow.

``load_data()`` returns ``(train, test)`` :class:`ClientData` matching
``tff.simulation.datasets.shakespeare.load_data``: 715 clients (speaking roles of Shakespeare's
plays, from LEAF), the same client ids in the same order (Python-``sorted``), each client's
snippets in TFF's order; each example is ``{'snippets': bytes}`` (a ``tf.string`` scalar in TFF,
here an object array of Python ``bytes``, ``[n]`` per client). Every client has at least one
snippet in each split (16,068 train and 2,356 test snippets in all).

The file is TFF's ``shakespeare.sqlite.lzma`` (``_RELEASE.url``), in TFF's SqlClientData schema
(:mod:`.sql_client_data`) with splits ``train`` and ``test``; each row's ``tf.train.Example`` holds
one bytes feature ``snippets``. It is looked for in ``cache_dir`` (default
``$FEDJAX_LIKE_CACHE/shakespeare`` or ``~/.cache/fedjax_like/shakespeare``) as
``shakespeare.sqlite`` (e.g. copied from TFF's own cache), else as ``shakespeare.sqlite.lzma``, else downloaded
(:mod:`.download`: resumable, checked, atomic).
"""

from __future__ import annotations

import os

from fedjax_like.data.client_data import ClientData
from fedjax_like.data.sources import download, sql_client_data
from fedjax_like.data.sources.tf_example import FixedLenFeature

# TFF publishes no size or checksum for this file; a fresh copy is checked by its schema and counts.
_RELEASE = download.Release(download.BASE_URL + 'shakespeare.sqlite.lzma')
_SPLITS = ('train', 'test')
_NUM_CLIENTS = {'train': 715, 'test': 715}
_SPEC = {'snippets': FixedLenFeature((), 'string')}


def load_data(
    cache_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> tuple[ClientData, ClientData]:
  """Federated Shakespeare ``(train, test)``, as TFF's ``shakespeare.load_data(cache_dir)``.

  Args:
    cache_dir: where ``shakespeare.sqlite`` is (or goes); defaults to
      ``$FEDJAX_LIKE_CACHE/shakespeare`` or ``~/.cache/fedjax_like/shakespeare``.
    download: fetch the file when it is not cached. With False, a missing file raises at once.

  Returns:
    ``(train, test)`` ClientData over the same 715 client ids; a client's dataset is
    ``{'snippets': object[n]}`` of ``bytes``.

  Raises:
    DatasetNotFoundError: not cached and not downloaded; the message names the file, the path to
      put it at and the URL.
    CorruptDatasetError: a cached file is damaged or not in TFF's schema.
  """
  return sql_client_data.load_release(
      _RELEASE,
      cache_dir,
      name='shakespeare',
      what='Federated Shakespeare',
      splits=_SPLITS,
      spec=_SPEC,
      postprocess=None,
      num_clients=_NUM_CLIENTS,
      allow_download=download,
  )
