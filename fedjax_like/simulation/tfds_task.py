"""The driver's ``data.dataset = 'tfds'`` task: a tensorflow-datasets classification dataset.

:func:`create_task` reads the config's ``[data]`` and ``[model]`` sections and builds a
:class:`~fedjax_like.simulation.baselines.BaselineTask` from ``fl.data.tfds.load`` (through
``tfds.data_source``: no TensorFlow). TFF has no such task; this one is deliberately small:

- **Features.** ``x`` is ``data.tfds_input_feature`` and ``y`` is ``data.tfds_label_feature``
  (default: the dataset's ``supervised_keys``). ``y`` must be an integer scalar; the classes are
  a ``ClassLabel``'s ``num_classes``, otherwise ``max(label) + 1`` over both splits (labels must
  be >= 0; e.g. sentiment140's polarity 0 / 4 gives 5 outputs, three never seen).
- **Images** (``x`` uint8 of fixed shape ``[H, W, C]`` or ``[H, W]``): ``x`` float32
  ``[H, W, C]`` scaled to ``[0, 1]`` (``/ 255``), ``y`` int32. Model: any image classifier of
  :mod:`fedjax_like.models.zoo` built for that shape (``'auto'``: ``'cnn'``, Reddi et al.'s CNN,
  which needs ``H, W >= 6``; ``'resnet18'`` with ``model.num_groups``).
- **Text** (``x`` a string): a bag of words. Texts are lower-cased and split into runs of word
  characters (``\\w+``); the vocabulary is the ``data.vocab_size`` most frequent words of the
  training split (ties in alphabetical order); ``x`` float32 ``[vocab_size]`` counts each
  in-vocabulary word at its index and divides by the number of in-vocabulary words (all zeros
  when there are none), as TFF's StackOverflow tag task does. Model: ``'logistic'`` (``'auto'``)
  or ``'mlp'``. Nothing else (no sequence models, no pretrained tokenizers).
- **Clients** (``data.partitioner``): the training split is partitioned with
  :mod:`fedjax_like.data.partition` (``'auto'``: natural ids when the dataset has a user field,
  :data:`fedjax_like.data.sources.tfds.USER_FIELDS`, else Dirichlet label skew); seeds are
  ``data.partition_seed``. The test split is split IID into ``data.num_clients`` clients (by
  natural id under ``'natural_id'``): evaluation sums every test client's metrics, so this split
  does not change them when all test clients are evaluated.
- **Batches**: TFF's order (shuffle by a seeded full permutation, repeat ``client_epochs``, take
  ``max_client_examples``), then batches of ``batch_size`` (the last padded and masked).
  Evaluation clients are not shuffled.

Errors are :class:`ConfigError` naming the option to change, except those of loading (tfds not
installed, the dataset not prepared), which :func:`fedjax_like.simulation.datasets.load_task`
turns into one.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_like.data.client_data import ClientData
from fedjax_like.data.dataset import BatchedDataset, Dataset
from fedjax_like.data.partition import (
    DirichletPartitioner,
    ExponentialPartitioner,
    IidPartitioner,
    LinearPartitioner,
    NaturalIdPartitioner,
    Partitioner,
    PathologicalPartitioner,
    ShardPartitioner,
    SquarePartitioner,
)
from fedjax_like.data.sources import tfds as fl_tfds
from fedjax_like.models import zoo
from fedjax_like.models.flax import from_linen
from fedjax_like.models.model import Model
from fedjax_like.simulation.baselines.baseline_task import BaselineTask, BaselineTaskDatasets
from fedjax_like.simulation.baselines.client_spec import ClientSpec, shuffle_repeat_take
from fedjax_like.simulation.config_files import ConfigError

IMAGE_MODELS = ('logistic', 'mlp', 'cnn', 'fedavg_cnn', 'resnet18')
TEXT_MODELS = ('logistic', 'mlp')
_SHUFFLE_BUFFER = 2  # > 1: shuffle_repeat_take draws a full seeded permutation.
_WORD = re.compile(r'\w+')


def _source(data, split: str):
  """``fl.data.tfds.data_source`` for ``split``; an unknown name is a ConfigError."""
  try:
    return fl_tfds.data_source(data.tfds_name, split, data_dir=data.cache_dir,
                               download=data.download)
  except ValueError as e:
    if type(e).__name__ != 'DatasetNotFoundError':
      raise
    raise ConfigError(
        f"data.tfds_name = '{data.tfds_name}': {str(e).splitlines()[0]} Give a name that "
        "tfds.list_builders() lists (e.g. 'mnist', 'cifar10', 'imdb_reviews')."
    ) from None


def _features(data, info) -> tuple[str, str, str]:
  """``(x feature, y feature, 'image' or 'text')``, checked against the dataset's features."""
  tensors = info.features.get_tensor_info()
  supervised = info.supervised_keys
  plain = isinstance(supervised, tuple) and len(supervised) >= 2 and all(
      isinstance(k, str) for k in supervised[:2])
  names = []
  for option, given, index in (('tfds_input_feature', data.tfds_input_feature, 0),
                               ('tfds_label_feature', data.tfds_label_feature, 1)):
    name = given or (supervised[index] if plain else None)
    if name is None:
      raise ConfigError(
          f'{data.tfds_name} names no supervised (input, label) features; set '
          f'data.tfds_input_feature and data.tfds_label_feature to two of {sorted(tensors)}.')
    if name not in tensors:
      raise ConfigError(
          f"data.{option} = '{name}' is not a feature of {data.tfds_name}; its features: "
          f'{sorted(tensors)}.')
    names.append(name)
  x_name, y_name = names
  x, y = tensors[x_name], tensors[y_name]
  x_dtype, y_dtype = np.dtype(x.np_dtype), np.dtype(y.np_dtype)
  if tuple(y.shape) != () or y_dtype.kind not in 'iu':
    raise ConfigError(
        f"data.tfds_label_feature = '{y_name}' is {y_dtype}{list(y.shape)}; the label must be an "
        'integer class (a scalar).')
  if x_dtype == np.uint8 and len(x.shape) in (2, 3) and None not in x.shape:
    return x_name, y_name, 'image'
  if x_dtype.kind in 'OSU' and tuple(x.shape) == ():
    return x_name, y_name, 'text'
  raise ConfigError(
      f"data.tfds_input_feature = '{x_name}' is {x_dtype}{list(x.shape)}; the driver trains on "
      'images (uint8 [H, W, C] of one fixed size) or texts (a string, as a bag of words). Pick '
      f'another feature of {sorted(tensors)} or load the dataset with fl.data.tfds.load and '
      'write the task in Python.')


def _partitioners(data, info, label: str) -> tuple[Partitioner, Partitioner]:
  """The training and test splits' partitioners for ``data.partitioner``."""
  kind, m, seed = data.partitioner, data.num_clients, data.partition_seed
  user = fl_tfds.natural_id_field(list(info.features.get_tensor_info()))
  if kind == 'auto':
    kind = 'natural_id' if user else 'dirichlet'
  if kind == 'natural_id':
    if user is None:
      raise ConfigError(
          f"data.partitioner = 'natural_id': {data.tfds_name} has no user field (one of "
          f"{', '.join(fl_tfds.USER_FIELDS)}); choose 'iid', 'dirichlet', 'pathological', "
          "'shards', 'linear', 'square' or 'exponential'.")
    return NaturalIdPartitioner(user), NaturalIdPartitioner(user)
  built = {
      'iid': lambda: IidPartitioner(m, seed=seed),
      'dirichlet': lambda: DirichletPartitioner(
          m, alpha=data.alpha, partition_by=label, min_partition_size=data.min_client_size,
          seed=seed),
      'pathological': lambda: PathologicalPartitioner(
          m, num_classes_per_partition=data.classes_per_client, partition_by=label, seed=seed),
      'shards': lambda: ShardPartitioner(
          m, partition_by=label, num_shards_per_partition=data.shards_per_client, seed=seed),
      'linear': lambda: LinearPartitioner(m, seed=seed),
      'square': lambda: SquarePartitioner(m, seed=seed),
      'exponential': lambda: ExponentialPartitioner(m, seed=seed),
  }[kind]()
  return built, IidPartitioner(m, seed=seed)


def _num_classes(info, label: str, splits: list[ClientData]) -> int:
  declared = getattr(info.features[label], 'num_classes', None)
  labels = [np.asarray(c.dataset_for_client(i).elements[label])
            for c in splits for i in c.client_ids]
  labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
  low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
  if declared is not None:
    if low < 0 or high >= declared:
      raise ConfigError(f'{info.name}: labels {low}..{high} outside its {declared} classes.')
    return int(declared)
  if low < 0:
    raise ConfigError(
        f"data.tfds_label_feature = '{label}' has negative values ({low}); the label must be a "
        'class index >= 0.')
  return high + 1


def tokenize(text) -> list[str]:
  """A text's words: lower-cased runs of word characters (``bytes`` decoded as UTF-8)."""
  if isinstance(text, (bytes, np.bytes_)):
    text = bytes(text).decode('utf-8', errors='replace')
  return _WORD.findall(str(text).lower())


def build_vocab(texts, vocab_size: int) -> list[str]:
  """The ``vocab_size`` most frequent words of ``texts`` (ties in alphabetical order)."""
  counts = collections.Counter(w for t in texts for w in tokenize(t))
  return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:vocab_size]]


def bag_of_words(texts, vocab: dict[str, int]) -> np.ndarray:
  """float32 ``[len(texts), len(vocab)]``: each in-vocabulary word counted at its index, divided
  by the text's number of in-vocabulary words (zeros when there are none)."""
  out = np.zeros((len(texts), len(vocab)), np.float32)
  for row, text in enumerate(texts):
    ids = [vocab[w] for w in tokenize(text) if w in vocab]
    if ids:
      np.add.at(out[row], ids, 1.0)
      out[row] /= len(ids)
  return out


def _preprocess_fn(spec: ClientSpec, x_name: str, y_name: str,
                   to_x: Callable[[np.ndarray], np.ndarray]) -> Callable[..., BatchedDataset]:
  def preprocess_fn(dataset: Dataset, seed=None) -> BatchedDataset:
    fields = {'x': np.asarray(dataset.elements[x_name]),
              'y': np.asarray(dataset.elements[y_name])}
    selected = shuffle_repeat_take(Dataset(fields), spec, _SHUFFLE_BUFFER, seed).elements
    examples = (to_x(selected['x']), selected['y'].astype(np.int32))
    return Dataset(examples, client_id=dataset.client_id).batch(spec.batch_size)

  return preprocess_fn


def _scale_image(x: np.ndarray) -> np.ndarray:
  x = x.astype(np.float32) / 255.0
  return x[..., None] if x.ndim == 3 else x  # [n, H, W] -> [n, H, W, 1].


def _model_name(name: str, kind: str) -> str:
  """``model.name`` for an ``'image'`` or ``'text'`` dataset (``'auto'`` resolved), checked."""
  allowed = IMAGE_MODELS if kind == 'image' else TEXT_MODELS
  name = ('cnn' if kind == 'image' else 'logistic') if name == 'auto' else name
  if name not in allowed:
    raise ConfigError(
        f"model.name = '{name}' does not read {kind}s; for a tfds {kind} dataset choose one of "
        f"{', '.join(repr(n) for n in allowed)} (or 'auto').")
  return name


def _model(name: str, shape: tuple[int, ...], num_classes: int, num_groups: int) -> Model:
  if name == 'resnet18':
    return zoo.resnet18(num_classes, input_shape=shape, num_groups=num_groups)
  modules = {'logistic': zoo.LogisticRegression, 'mlp': zoo.MLP, 'cnn': zoo.EmnistCnn,
             'fedavg_cnn': zoo.FedAvgCnn}
  spec = (jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
  try:
    return from_linen(modules[name](num_classes), input_spec=spec)
  except ValueError as e:
    raise ConfigError(f"model.name = '{name}' cannot read inputs of shape {shape}: {e}") from e


def create_task(data, model, spec: ClientSpec) -> BaselineTask:
  """The task of ``data.tfds_name`` (see the module docstring).

  Args:
    data: the config's ``[data]`` section (:class:`~fedjax_like.simulation.config.DataConfig`).
    model: the ``[model]`` section.
    spec: the training clients' epochs, batch size and example cap.

  Raises:
    ConfigError: an option does not fit the dataset (naming the option and the choices).
    DatasetNotFoundError, ImportError, ValueError: from loading (not prepared with download off,
      tensorflow-datasets not installed, a partition that cannot be made).
  """
  info = _source(data, data.tfds_train_split).dataset_info
  x_name, y_name, kind = _features(data, info)
  model_name = _model_name(model.name, kind)
  train_partitioner, test_partitioner = _partitioners(data, info, y_name)
  kwargs = dict(data_dir=data.cache_dir, download=data.download, features=[x_name, y_name])
  train = fl_tfds.load(data.tfds_name, data.tfds_train_split, train_partitioner, **kwargs)
  test = fl_tfds.load(data.tfds_name, data.tfds_test_split, test_partitioner, **kwargs)
  num_classes = _num_classes(info, y_name, [train, test])
  if kind == 'image':
    shape = tuple(int(d) for d in info.features.get_tensor_info()[x_name].shape)
    shape, to_x = (shape if len(shape) == 3 else shape + (1,)), _scale_image
  else:
    texts = train.create_dataset_from_all_clients().elements[x_name]
    vocab = {w: i for i, w in enumerate(build_vocab(texts, data.vocab_size))}
    if not vocab:
      raise ConfigError(f'{data.tfds_name}: the training split has no words to build a '
                        'vocabulary from.')
    shape = (len(vocab),)
    to_x = lambda x: bag_of_words(x, vocab)  # noqa: E731
  built = _model(model_name, shape, num_classes, model.num_groups)
  eval_spec = ClientSpec(num_epochs=1, batch_size=64, shuffle_buffer_size=1)
  datasets = BaselineTaskDatasets(
      train, test, None, _preprocess_fn(spec, x_name, y_name, to_x),
      _preprocess_fn(eval_spec, x_name, y_name, to_x))
  return BaselineTask(datasets, lambda: built)
