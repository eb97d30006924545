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


@dataclasses.dataclass
class DataConfig:
  # 'tfds' (the tensorflow-datasets source) is added to this list, with its options below, by the
  # tfds source; fedjax_like/simulation/datasets.py has the matching place for its task.
  dataset: Literal[
      'digits', 'emnist', 'shakespeare', 'stackoverflow_word', 'stackoverflow_tag', 'cifar100'
  ] = _field(
      'digits',
      "'digits': scikit-learn's handwritten digits, offline; 'emnist': TFF's federated EMNIST "
      "(character recognition); 'shakespeare': next-character prediction; 'stackoverflow_word': "
      "next-word prediction; 'stackoverflow_tag': tag prediction; 'cifar100': image "
      "classification. Each is TFF's baseline task (tff.simulation.baselines).",
  )
  only_digits: bool = _field(True, 'emnist: the 10 digit classes (false: all 62 characters).')
  cache_dir: str | None = _field(
      None,
      "Where the dataset's files are (default ~/.cache/fedjax_like/<emnist, shakespeare, "
      'stackoverflow or cifar100>).',
  )
  download: bool = _field(True, 'Download the files when they are not cached.')
  num_clients: int = _field(100, 'digits: number of clients the 1,797 digits are split across.')
  alpha: float = _field(0.5, 'digits: Dirichlet label-skew concentration (smaller = more non-IID).')
  partition_seed: int = _field(0, 'digits: seed of the client split.')
  sequence_length: int | None = _field(
      None, "shakespeare, stackoverflow_word: tokens per example (none: TFF's 80 and 20)."
  )
  vocab_size: int = _field(10000, 'stackoverflow_word, stackoverflow_tag: the most frequent words.')
  num_out_of_vocab_buckets: int = _field(1, 'stackoverflow_word: out-of-vocabulary ids.')
  tag_vocab_size: int = _field(500, 'stackoverflow_tag: the most frequent tags, to predict.')
  crop_size: int = _field(24, 'cifar100: images are cropped to crop_size x crop_size (at most 32).')
  distort_train_images: bool = _field(
      False, "cifar100: random crops and flips of training images (TFF's default: false)."
  )


@dataclasses.dataclass
class ModelConfig:
  name: Literal['auto', 'logistic', 'mlp', 'cnn', 'fedavg_cnn'] = _field(
      'auto',
      "'auto': the dataset's model (digits: logistic; emnist: cnn; shakespeare, "
      "stackoverflow_word: TFF's LSTMs; stackoverflow_tag: TFF's logistic regression; cifar100: "
      "ResNet-18 with group norm). For digits and emnist: 'logistic' (the seed's Dense), 'mlp' "
      "(2 x 200 ReLU), 'cnn' (Reddi et al. 2020), 'fedavg_cnn' (McMahan et al. 2017).",
  )
  loss_mask: Literal['inputs', 'targets', 'none'] = _field(
      'inputs',
      "shakespeare, stackoverflow_word: the tokens the loss averages over: 'inputs' (TFF: where "
      "the input is not padding), 'targets' (where the target is not), 'none' (every position).",
  )
  num_groups: int = _field(
      2, 'cifar100: groups per group-norm layer (2: Reddi et al.; 32: TFF since 2023).'
  )



def check_data_sections(config) -> None:
  """Ranges and combinations of [data] and [model]."""
  data, model = config.data, config.model
  positive = {
      'data.num_clients': data.num_clients, 'data.sequence_length': data.sequence_length,
      'data.vocab_size': data.vocab_size, 'data.num_out_of_vocab_buckets':
      data.num_out_of_vocab_buckets, 'data.tag_vocab_size': data.tag_vocab_size,
      'data.crop_size': data.crop_size, 'model.num_groups': model.num_groups,
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
