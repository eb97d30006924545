"""The [data] and [model] sections (simulation/config_data.py): where they live, their help, and
the checks of their ranges and combinations."""

import pytest

from fedjax_like.simulation import config, config_data
from fedjax_like.simulation.config import ConfigError, load_config


def test_sections_are_importable_from_config_and_reach_the_schema():
  assert config.DataConfig is config_data.DataConfig
  assert config.ModelConfig is config_data.ModelConfig
  fields = config.flat_fields()
  for key in ('data.dataset', 'data.alpha', 'data.partition_seed', 'model.name',
              'model.num_groups'):
    assert fields[key][2], key  # Every option has its --help text.
  assert fields['data.dataset'][1] == 'digits' and fields['model.name'][1] == 'auto'


@pytest.mark.parametrize(
    'key, value, expected',
    [
        ('data.num_clients', '0', 'data.num_clients: expected a positive integer, got 0'),
        ('data.sequence_length', '-3', 'data.sequence_length: expected a positive integer'),
        ('model.num_groups', '0', 'model.num_groups: expected a positive integer'),
        ('data.partition_seed', '-1', 'data.partition_seed: expected a value >= 0'),
        ('data.crop_size', '33', 'data.crop_size: expected at most 32, got 33'),
        ('data.alpha', '0', 'data.alpha: expected a value > 0'),
    ],
)
def test_out_of_range_values_name_the_key(key, value, expected):
  with pytest.raises(ConfigError, match=expected.replace('(', r'\(').replace(')', r'\)')):
    load_config(None, [(key, value)])
  load_config(None, [(key, '1' if key != 'data.crop_size' else '32')])  # In range: accepted.


def test_tfds_options_are_checked_before_anything_is_loaded():
  with pytest.raises(ConfigError, match="data.dataset = 'tfds' needs data.tfds_name"):
    load_config(None, [('data.dataset', 'tfds')])
  cfg = load_config(None, [('data.dataset', 'tfds'), ('data.tfds_name', 'cifar10'),
                           ('data.partitioner', 'shards'), ('model.name', 'resnet18')])
  assert (cfg.data.tfds_train_split, cfg.data.tfds_test_split) == ('train', 'test')
  assert cfg.data.tfds_input_feature is None and cfg.data.partitioner == 'shards'
  with pytest.raises(ConfigError, match="data.partitioner.*one of 'auto', 'natural_id', 'iid'"):
    load_config(None, [('data.partitioner', 'random')])
  for key in ('data.classes_per_client', 'data.shards_per_client'):
    with pytest.raises(ConfigError, match=f'{key}: expected a positive integer'):
      load_config(None, [(key, '0')])
  with pytest.raises(ConfigError, match='data.min_client_size: expected a value >= 0'):
    load_config(None, [('data.min_client_size', '-1')])


@pytest.mark.parametrize('dataset, hint', [
    ('digits', "'logistic', 'mlp', 'cnn' or 'fedavg_cnn'"),
    ('cifar100', "it with model.name = 'auto'"),
])
def test_resnet18_is_for_tfds_images(dataset, hint):
  with pytest.raises(ConfigError, match=f"model.name = 'resnet18' is for data.dataset = 'tfds'.*"
                                        f'{hint}'):
    load_config(None, [('data.dataset', dataset), ('model.name', 'resnet18')])
