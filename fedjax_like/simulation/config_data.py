"""The config sections that choose the data and the model: ``[data]`` and ``[model]``.

:class:`DataConfig` names the dataset (``data.dataset``: the offline digits, one of TFF's baseline
datasets, or a tensorflow-datasets dataset) and the options of its loading, partitioning and
preprocessing; :class:`ModelConfig` the model trained on it (``'auto'``: the dataset's own).
:func:`check_data_sections` checks their ranges and combinations (part of ``load_config``'s
validation, before any file is read); how they become a task is
:mod:`fedjax_like.simulation.datasets`. Both classes are importable from
:mod:`fedjax_like.simulation.config` too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from fedjax_like.simulation.config_files import ConfigError


def _field(default: Any, help_text: str) -> Any:
  return dataclasses.field(default=default, metadata={'help': help_text})


#: ``data.partitioner``: how a tfds split becomes clients (fedjax_like.data.partition's names).
PARTITIONERS = (
    'auto', 'natural_id', 'iid', 'dirichlet', 'pathological', 'shards', 'linear', 'square',
    'exponential',
)


@dataclasses.dataclass
class DataConfig:
  dataset: Literal[
      'digits', 'emnist', 'shakespeare', 'stackoverflow_word', 'stackoverflow_tag', 'cifar100',
      'tfds',
  ] = _field(
      'digits',
      "'digits': scikit-learn's handwritten digits, offline; 'emnist': TFF's federated EMNIST "
      "(character recognition); 'shakespeare': next-character prediction; 'stackoverflow_word': "
      "next-word prediction; 'stackoverflow_tag': tag prediction; 'cifar100': image "
      "classification. Each is TFF's baseline task (tff.simulation.baselines). 'tfds': a "
      'tensorflow-datasets image or text classification dataset (data.tfds_name), split into '
      'clients by data.partitioner.',
  )
  only_digits: bool = _field(True, 'emnist: the 10 digit classes (false: all 62 characters).')
  cache_dir: str | None = _field(
      None,
      "Where the dataset's files are (default ~/.cache/fedjax_like/<emnist, shakespeare, "
      "stackoverflow or cifar100>); tfds: tfds's data_dir (default $TFDS_DATA_DIR or "
      '~/tensorflow_datasets).',
  )
  download: bool = _field(
      True, 'Download the files when they are not cached (tfds: download and prepare).'
  )
  num_clients: int = _field(
      100, 'digits, tfds: number of clients the examples are split across (not natural_id).'
  )
  alpha: float = _field(
      0.5, 'digits, tfds dirichlet: Dirichlet label-skew concentration (smaller = more non-IID).'
  )
  partition_seed: int = _field(0, 'digits, tfds: seed of the client split.')
  sequence_length: int | None = _field(
      None, "shakespeare, stackoverflow_word: tokens per example (none: TFF's 80 and 20)."
  )
  vocab_size: int = _field(
      10000,
      'stackoverflow_word, stackoverflow_tag: the most frequent words; tfds text: the words of '
      'the bag of words (the most frequent of the training split).',
  )
  num_out_of_vocab_buckets: int = _field(1, 'stackoverflow_word: out-of-vocabulary ids.')
  tag_vocab_size: int = _field(500, 'stackoverflow_tag: the most frequent tags, to predict.')
  crop_size: int = _field(24, 'cifar100: images are cropped to crop_size x crop_size (at most 32).')
  distort_train_images: bool = _field(
      False, "cifar100: random crops and flips of training images (TFF's default: false)."
  )
  tfds_name: str | None = _field(
      None, "tfds: the dataset, as tfds names it (e.g. 'mnist', 'cifar10', 'imdb_reviews')."
  )
  tfds_train_split: str = _field('train', "tfds: the training split (slices too: 'train[:80%]').")
  tfds_test_split: str = _field('test', "tfds: the evaluation split (e.g. 'train[80%:]').")
  tfds_input_feature: str | None = _field(
      None,
      "tfds: the feature the model reads, an image (uint8 [H, W, C]) or a text (none: the "
      "dataset's supervised input, e.g. 'image').",
  )
  tfds_label_feature: str | None = _field(
      None, "tfds: the integer class label (none: the dataset's supervised label, e.g. 'label')."
  )
  partitioner: Literal[PARTITIONERS] = _field(
      'auto',
      "tfds: how each split becomes clients. 'natural_id': one client per user (the dataset's "
      "user field); 'iid': equal random shares; 'dirichlet': label skew by alpha; "
      "'pathological': classes_per_client classes each; 'shards': shards_per_client shards of "
      "label-sorted examples each (McMahan et al.); 'linear', 'square', 'exponential': size "
      "skew. 'auto': natural_id where the dataset has a user field, else dirichlet. The test "
      'split is split IID (or by natural id), which leaves the evaluation metrics unchanged.',
  )
  min_client_size: int = _field(
      10, "tfds dirichlet: the fewest training examples a client may hold (Flower's default 10)."
  )
  classes_per_client: int = _field(2, 'tfds pathological: classes each client holds.')
  shards_per_client: int = _field(2, 'tfds shards: shards each client holds.')


@dataclasses.dataclass
class ModelConfig:
  name: Literal['auto', 'logistic', 'mlp', 'cnn', 'fedavg_cnn', 'resnet18'] = _field(
      'auto',
      "'auto': the dataset's model (digits: logistic; emnist: cnn; shakespeare, "
      "stackoverflow_word: TFF's LSTMs; stackoverflow_tag: TFF's logistic regression; cifar100: "
      "ResNet-18 with group norm; tfds: cnn for images, logistic for text). For digits, emnist "
      "and tfds images: 'logistic' (the seed's Dense), 'mlp' (2 x 200 ReLU), 'cnn' (Reddi et al. "
      "2020), 'fedavg_cnn' (McMahan et al. 2017); 'resnet18' (tfds images only, model.num_groups "
      "groups). For tfds text: 'logistic' or 'mlp' on the bag of words.",
  )
  loss_mask: Literal['inputs', 'targets', 'none'] = _field(
      'inputs',
      "shakespeare, stackoverflow_word: the tokens the loss averages over: 'inputs' (TFF: where "
      "the input is not padding), 'targets' (where the target is not), 'none' (every position).",
  )
  num_groups: int = _field(
      2, 'cifar100, tfds resnet18: groups per group-norm layer (2: Reddi et al.; 32: TFF since '
      '2023).'
  )


def check_data_sections(config) -> None:
  """Ranges and combinations of [data] and [model]."""
  data, model = config.data, config.model
  positive = {
      'data.num_clients': data.num_clients, 'data.sequence_length': data.sequence_length,
      'data.vocab_size': data.vocab_size, 'data.num_out_of_vocab_buckets':
      data.num_out_of_vocab_buckets, 'data.tag_vocab_size': data.tag_vocab_size,
      'data.crop_size': data.crop_size, 'model.num_groups': model.num_groups,
      'data.classes_per_client': data.classes_per_client,
      'data.shards_per_client': data.shards_per_client,
  }  # fmt: skip
  for key, value in positive.items():
    if value is not None and value < 1:
      raise ConfigError(f'{key}: expected a positive integer, got {value!r}.')
  if data.partition_seed < 0:
    raise ConfigError(f'data.partition_seed: expected a value >= 0, got {data.partition_seed!r}.')
  if data.crop_size > 32:
    raise ConfigError(f'data.crop_size: expected at most 32, got {data.crop_size!r}.')
  if data.alpha <= 0:
    raise ConfigError(f'data.alpha: expected a value > 0, got {data.alpha!r}.')
  if data.min_client_size < 0:
    raise ConfigError(f'data.min_client_size: expected a value >= 0, got {data.min_client_size!r}.')
  if data.dataset == 'tfds' and not (data.tfds_name or '').strip():
    raise ConfigError(
        "data.dataset = 'tfds' needs data.tfds_name, the tfds dataset to train on (e.g. "
        '--data.tfds_name mnist; tfds.list_builders() names them all).'
    )
  if model.name == 'resnet18' and data.dataset != 'tfds':
    raise ConfigError(
        f"model.name = 'resnet18' is for data.dataset = 'tfds' images; data.dataset = "
        f"'{data.dataset}' trains "
        + ("it with model.name = 'auto'." if data.dataset == 'cifar100' else
           "'logistic', 'mlp', 'cnn' or 'fedavg_cnn' (or 'auto').")
    )
