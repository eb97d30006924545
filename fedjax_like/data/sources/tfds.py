"""tensorflow-datasets as federated data, without TensorFlow.

``load(name, split, partitioner)`` reads a TFDS dataset through ``tfds.data_source`` (random
access over ``array_record`` or ``parquet`` files, records decoded to NumPy by tfds itself),
holds it as centralized arrays, and splits it into clients with a partitioner from
:mod:`fedjax_like.data.partition`::

    train = fl.data.tfds.load('mnist', 'train', fl.data.partition.DirichletPartitioner(
        100, alpha=0.5))
    train.dataset_for_client('0').elements   # {'image': uint8[n, 28, 28, 1], 'label': int64[n]}

No TFDS dataset is federated by itself. Where a dataset has a user field (one of
:data:`USER_FIELDS`, e.g. sentiment140's ``'user'``) and no partitioner is given, the clients
are its natural ids (:class:`~fedjax_like.data.partition.NaturalIdPartitioner`).

Contracts:

* ``tfds.load`` and ``tfds.as_numpy`` build ``tf.data`` pipelines and import TensorFlow; nothing
  here calls them, and reading imports no TensorFlow. (Preparing some datasets the first time
  does: tfds encodes NumPy images with ``tf.image``. Prepare those once where TensorFlow is
  installed, with ``file_format='array_record'``, and read them anywhere.)
* Data must be prepared as ``array_record`` (the default here, where the package is installed:
  Linux) or ``parquet``; files prepared as TFRecord (``tfds.load``'s default) have no random
  access and give an error that says how to prepare them again.
* Centralized arrays: a feature of fixed shape is stacked to ``[num_examples, *shape]`` in its
  tfds dtype (images uint8, ``ClassLabel`` int64); text and other variable-size features become
  object arrays ``[num_examples]`` (text as ``bytes``). Nested feature dicts stay nested.
* Examples come in the order of the data source (tfds's shuffled, deterministic file order); a
  prepared file holding fewer records than the dataset info counts is an error (tfds 4.9.10
  writes only part of a split when preparing ``parquet`` with more than 100 examples).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax.tree_util as jtu
import numpy as np

from fedjax_like.data.client_data import ClientData
from fedjax_like.data.partition import NaturalIdPartitioner, Partitioner
from fedjax_like.data.sources import DatasetNotFoundError

# Feature names that mark each example's natural client, most specific first.
USER_FIELDS = ('client_id', 'user_id', 'user', 'speaker_id', 'writer_id', 'author')

_READ_CHUNK = 1024


def _tfds():
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise ImportError(
        'fl.data.tfds needs tensorflow-datasets (without TensorFlow): '
        'pip install "fedjax_like[tfds]".'
    ) from e
  return tfds


def _default_file_format() -> str:
  try:
    import array_record  # noqa: F401  (tfds installs it on Linux only)
  except ImportError:
    return 'parquet'
  return 'array_record'


def data_source(
    name: str,
    split: str = 'train',
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    file_format: str | None = None,
    builder_kwargs: Mapping[str, Any] | None = None,
    download_and_prepare_kwargs: Mapping[str, Any] | None = None,
):
  """``tfds.data_source(name, split=split, ...)``, preparing random-access files if needed.

  Args:
    name: the tfds name, e.g. ``'mnist'`` or ``'cifar10:3.0.2'``.
    split: a tfds split, slices included (``'train[:80%]'``).
    data_dir: where prepared datasets live (tfds's default: ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``).
    download: download and prepare the dataset when it is not prepared in ``data_dir``.
    file_format: the format to prepare in: ``'array_record'`` (default where installed) or
      ``'parquet'``. A dataset already prepared is read in whatever format it has.
    builder_kwargs, download_and_prepare_kwargs: passed to tfds.

  Returns:
    The tfds data source: ``len(source)`` records, ``source[i]`` a dict of NumPy values.

  Raises:
    DatasetNotFoundError: not prepared in ``data_dir`` and ``download`` is False.
    ValueError: prepared only as TFRecord, which has no random access.
  """
  tfds = _tfds()
  kwargs = dict(builder_kwargs or {})
  if file_format is not None and file_format not in ('array_record', 'parquet'):
    raise ValueError(f"file_format must be 'array_record' or 'parquet'; got {file_format!r}.")
  builder = tfds.builder(name, data_dir=data_dir, **kwargs)
  if builder.is_prepared():
    prepared = str(getattr(builder.info.file_format, 'value', builder.info.file_format))
    if prepared not in ('array_record', 'parquet'):
      raise ValueError(
          f'{name} is prepared in {builder.data_dir} as {prepared}, which has no random access. '
          "Prepare it again as array_record into another data_dir (fl.data.tfds.load(..., "
          "data_dir=NEW_DIR, file_format='array_record')), or delete that directory."
      )
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                            builder_kwargs=kwargs or None)
  if not download:
    raise DatasetNotFoundError(
        f'tfds dataset {name!r} is not prepared in {builder.data_dir}. Pass download=True to '
        "download and prepare it, or prepare it there with file_format='array_record'."
    )
  kwargs['file_format'] = file_format or _default_file_format()
  try:
    return tfds.data_source(
        name, split=split, data_dir=data_dir, download=True, builder_kwargs=kwargs,
        download_and_prepare_kwargs=dict(download_and_prepare_kwargs or {}) or None,
    )
  except ModuleNotFoundError as e:
    missing = (e.name or '').split('.')[0]
    if missing != 'tensorflow' and "No module named 'tensorflow'" not in str(e):
      raise  # (tfds re-raises with context, which can drop the name; its message keeps it.)
    raise ImportError(
        f'Preparing {name!r} needs TensorFlow (tfds encodes its examples with tf). Prepare it '
        "once where TensorFlow is installed, with tfds.builder(name, file_format='array_record')"
        '.download_and_prepare(), then read it here with data_dir pointing there.'
    ) from e


def _read_records(source) -> list[Any]:
  """Every record of ``source``, in batches where the source reads batches."""
  n = len(source)
  records: list[Any] = []
  batched = hasattr(source, '__getitems__')
  for start in range(0, n, _READ_CHUNK):
    keys = list(range(start, min(start + _READ_CHUNK, n)))
    if batched:
      try:
        records += source.__getitems__(keys)
        continue
      except TypeError:  # A source without a working batch read (e.g. tfds's mock).
        if start:
          raise
        batched = False
    records += [source[i] for i in keys]
  return records


def _column(values: list[Any], info) -> np.ndarray:
  """One feature's values stacked: ``[n, *shape]`` in its dtype when fixed, else objects."""
  shape = getattr(info, 'shape', None)
  dtype = np.dtype(getattr(info, 'np_dtype', None) or object)
  fixed = shape is not None and all(d is not None for d in shape) and dtype.kind != 'O'
  if fixed:
    try:
      return np.asarray(values, dtype=dtype).reshape((len(values), *shape))
    except (ValueError, TypeError):
      pass
  out = np.empty(len(values), dtype=object)
  out[:] = [
      v if isinstance(v, bytes) else v.encode('utf-8') if isinstance(v, str) else np.asarray(v)
      for v in values
  ]  # Text as bytes, as the files hold it (tfds's mock examples give str).
  return out


def to_arrays(source, features: Sequence[str] | None = None) -> dict[str, Any]:
  """A tfds data source's records as centralized arrays ``{feature: array[num_examples, ...]}``.

  Args:
    source: a tfds data source (``tfds.data_source(...)`` or :func:`data_source`).
    features: the top-level features to keep (default: all).

  Raises:
    ValueError: the source holds fewer records than its dataset info counts for the split, or a
      named feature does not exist.
  """
  info = source.dataset_info
  split = getattr(source, 'split', None)
  expected = None
  try:
    expected = info.splits[split].num_examples if split is not None else None
  except (KeyError, ValueError, TypeError):
    pass
  if isinstance(expected, (int, np.integer)) and expected != len(source):
    raise ValueError(
        f'{info.name} split {split!r}: the prepared files hold {len(source)} records but the '
        f'dataset info counts {expected}; the files are incomplete. Prepare the dataset again '
        "(with file_format='array_record')."
    )
  tensor_info = info.features.get_tensor_info()
  names = list(tensor_info) if features is None else list(features)
  missing = [f for f in names if f not in tensor_info]
  if missing:
    raise ValueError(f'{info.name} has no features {missing}; its features: {sorted(tensor_info)}.')
  records = _read_records(source)
  out = {}
  for name in names:
    leaves, treedef = jtu.tree_flatten(tensor_info[name])
    per_leaf = list(zip(*(treedef.flatten_up_to(r[name]) for r in records), strict=True))
    if not per_leaf:
      per_leaf = [[] for _ in leaves]
    out[name] = treedef.unflatten(
        [_column(list(v), leaf) for v, leaf in zip(per_leaf, leaves, strict=True)]
    )
  return out


def natural_id_field(features: Sequence[str]) -> str | None:
  """The first of :data:`USER_FIELDS` among ``features``, or None."""
  return next((f for f in USER_FIELDS if f in features), None)


def load(
    name: str,
    split: str = 'train',
    partitioner: Partitioner | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    features: Sequence[str] | None = None,
    file_format: str | None = None,
    builder_kwargs: Mapping[str, Any] | None = None,
    download_and_prepare_kwargs: Mapping[str, Any] | None = None,
) -> ClientData:
  """A tfds dataset split into clients: an in-memory :class:`~fedjax_like.data.ClientData`.

  Args:
    name: the tfds name, e.g. ``'mnist'``, ``'cifar10'``, ``'sentiment140'``.
    split: a tfds split (slices included).
    partitioner: e.g. ``fl.data.partition.DirichletPartitioner(100, alpha=0.5)``; its
      ``partition_by`` column must be a feature. None: natural ids from the dataset's user field
      (an error when it has none).
    data_dir, download, file_format, builder_kwargs, download_and_prepare_kwargs: as
      :func:`data_source`.
    features: the top-level features each client's dataset holds (default: all).

  Returns:
    ClientData whose client ids are the partition's (``'0'``, ``'1'``, ... or natural ids); a
    client's dataset is ``{feature: array[n, ...]}`` as :func:`to_arrays` describes.
  """
  source = data_source(
      name, split, data_dir=data_dir, download=download, file_format=file_format,
      builder_kwargs=builder_kwargs, download_and_prepare_kwargs=download_and_prepare_kwargs,
  )
  all_features = list(source.dataset_info.features.get_tensor_info())
  if partitioner is None:
    field = natural_id_field(all_features)
    if field is None:
      raise ValueError(
          f'{name} has no user field ({", ".join(USER_FIELDS)}) to make natural clients from; '
          'pass a partitioner, e.g. fl.data.partition.DirichletPartitioner(100, alpha=0.5). '
          f'Its features: {all_features}.'
      )
    partitioner = NaturalIdPartitioner(field)
  by = getattr(partitioner, 'partition_by', None)
  keep = list(all_features if features is None else features)
  read = keep + [by] if isinstance(by, str) and by in all_features and by not in keep else keep
  arrays = to_arrays(source, read)
  try:
    partition = partitioner(arrays)
  except KeyError as e:
    supervised = source.dataset_info.supervised_keys
    hint = f" (its supervised label is {supervised[1]!r})" if supervised else ''
    raise KeyError(
        f'{e.args[0]} {name} has features {all_features}{hint}; set the partitioner\'s '
        'partition_by to one of them, e.g. dataclasses.replace(partitioner, partition_by=...).'
    ) from None
  return partition.client_data({f: arrays[f] for f in keep})


__all__ = ['USER_FIELDS', 'data_source', 'load', 'natural_id_field', 'to_arrays']
