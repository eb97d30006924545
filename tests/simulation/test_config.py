"""The config schema: shipped configs load, overrides parse, and every bad config fails clearly."""

import dataclasses
import json
import pathlib
import sys

import pytest

from fedjax_like.simulation import config as config_lib
from fedjax_like.simulation.config import ConfigError, load_config
from fedjax_like.simulation.config_files import parse_toml_subset

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / 'fedjax_like' / 'configs').glob('*.toml'))


def test_shipped_configs_load_and_the_fallback_toml_reader_agrees_with_tomllib():
  tomllib = pytest.importorskip('tomllib' if sys.version_info >= (3, 11) else 'tomli')
  assert {p.name for p in CONFIGS} >= {'digits.toml', 'emnist62_fedavg.toml'}
  for path in CONFIGS:
    text = path.read_text()
    assert parse_toml_subset(text, str(path)) == tomllib.loads(text), path
    load_config(str(path))


def test_emnist62_config_is_reddi_et_al_fedavg():
  config = load_config(str(ROOT / 'fedjax_like' / 'configs' / 'emnist62_fedavg.toml'))
  assert (config.data.dataset, config.data.only_digits, config.model.name) == (
      'emnist',
      False,
      'cnn',
  )
  t = config.training
  assert (t.algorithm, t.clients_per_round, t.client_epochs, t.batch_size, t.num_rounds) == (
      'fed_avg',
      10,
      1,
      20,
      1500,
  )
  assert (config.client_optimizer.name, config.client_optimizer.learning_rate) == ('sgd', 0.1)
  assert (config.server_optimizer.name, config.server_optimizer.learning_rate) == ('sgd', 1.0)
  assert config.client_optimizer.momentum == config.server_optimizer.momentum == 0.0
  assert '84.9' in config.description


# Reddi et al. 2021's settings (google-research/federated optimization/docs/hyperparameters.md):
# clients per round, batch, rounds, max examples, client lr, server optimizer, server lr, epsilon.
REDDI = {
    'shakespeare_fedyogi.toml': ('shakespeare', 10, 4, 1200, None, 1.0, 'yogi', 1e-2, 1e-3, '57.2'),
    'stackoverflow_word_fedyogi.toml': (
        'stackoverflow_word', 50, 16, 1500, 1000, 10**-0.5, 'yogi', 1e-2, 1e-5, '25.2'),
    'stackoverflow_tag_fedadagrad.toml': (
        'stackoverflow_tag', 10, 100, 1500, 1000, 100.0, 'adagrad', 10.0, 1e-2, '67.1'),
    'cifar100_fedyogi.toml': ('cifar100', 10, 20, 4000, None, 10**-1.5, 'yogi', 1.0, 1e-1, '52.4'),
}


@pytest.mark.parametrize('name', sorted(REDDI))
def test_reddi_et_al_configs(name):
  dataset, clients, batch, rounds, cap, client_lr, server, server_lr, eps, published = REDDI[name]
  config = load_config(str(ROOT / 'fedjax_like' / 'configs' / name))
  t = config.training
  assert (config.data.dataset, config.model.name, config.seed) == (dataset, 'auto', 1)
  assert (t.clients_per_round, t.batch_size, t.num_rounds, t.client_epochs) == (
      clients, batch, rounds, 1)
  assert t.max_client_examples == cap and t.algorithm == 'fed_avg'
  assert config.client_optimizer.name == 'sgd'
  assert config.client_optimizer.learning_rate == pytest.approx(client_lr)
  assert config.server_optimizer.name == server
  assert config.server_optimizer.learning_rate == pytest.approx(server_lr)
  assert config.server_optimizer.epsilon == pytest.approx(eps)
  assert published + '%' in config.description


def test_defaults_are_the_offline_digits_config():
  default = dataclasses.replace(load_config(), description='')
  from_file = dataclasses.replace(
      load_config(str(ROOT / 'fedjax_like' / 'configs' / 'digits.toml')), description=''
  )
  assert default == from_file
  assert default.data.dataset == 'digits'


def test_overrides_parse_each_type_and_apply_in_order(tmp_path):
  config = load_config(
      None,
      [
          ('training.num_rounds', '7'),
          ('client_optimizer.learning_rate', '0.5'),
          ('output.csv', 'false'),
          ('training.max_client_examples', '64'),
          ('training.max_client_examples', 'none'),
          ('model.name', 'cnn'),
          ('name', 'x1'),
      ],
  )
  assert config.training.num_rounds == 7
  assert config.client_optimizer.learning_rate == 0.5
  assert config.output.csv is False
  assert config.training.max_client_examples is None
  assert (config.model.name, config.name) == ('cnn', 'x1')
  assert config_lib.parse_set('seed=3') == ('seed', '3')


def test_a_partial_section_keeps_the_other_defaults(tmp_path):
  path = tmp_path / 'c.toml'
  path.write_text('[server_optimizer]\nmomentum = 0.9\n')
  config = load_config(str(path))
  assert config.server_optimizer.learning_rate == 1.0
  assert config.server_optimizer.momentum == 0.9


def test_json_configs_round_trip(tmp_path):
  config = load_config(None, [('seed', '5')])
  path = tmp_path / 'c.json'
  path.write_text(config_lib.dumps(config))
  assert load_config(str(path)) == config


@pytest.mark.parametrize(
    'text, expected',
    [
        ('[training]\nnum_round = 5\n', ['training.num_round', "mean 'training.num_rounds'"]),
        ('[trainig]\nnum_rounds = 5\n', ["'trainig'", "Did you mean 'training'"]),
        ('learning_rate = 0.1\n', ["'learning_rate'"]),
        ('[training]\nnum_rounds = "ten"\n', ['training.num_rounds', 'an integer', "'ten'"]),
        ('[training]\nnum_rounds = 2.5\n', ['training.num_rounds', 'expected an integer']),
        ('[output]\ncsv = 1\n', ['output.csv', 'expected a boolean']),
        ('[model]\nname = "resnet"\n', ['model.name', "one of 'auto', 'logistic'", 'resnet']),
        ('training = 3\n', ['training', 'expected a table']),
        ('[training]\nnum_rounds = 0\n', ['training.num_rounds', 'positive integer']),
        ('[client_optimizer]\nmomentum = 1.5\n', ['client_optimizer.momentum', '[0, 1)']),
    ],
)
def test_bad_files_name_the_key_the_file_and_what_was_expected(tmp_path, text, expected):
  path = tmp_path / 'bad.toml'
  path.write_text(text)
  with pytest.raises(ConfigError) as error:
    load_config(str(path))
  message = str(error.value)
  for part in expected:
    assert part in message, message
  if 'positive' not in message and '[0, 1)' not in message:
    assert str(path) in message


def test_bad_overrides_name_the_key():
  with pytest.raises(
      ConfigError, match=r'training\.num_rounds \(command line\): expected an integer'
  ):
    load_config(None, [('training.num_rounds', 'many')])
  with pytest.raises(
      ConfigError, match="Unknown config key 'training.rounds'.*training.num_rounds"
  ):
    load_config(None, [('training.rounds', '3')])
  with pytest.raises(ConfigError, match='key=value'):
    config_lib.parse_set('training.num_rounds')


def test_missing_and_malformed_files_are_named(tmp_path):
  with pytest.raises(ConfigError, match='nope.toml does not exist'):
    load_config(str(tmp_path / 'nope.toml'))
  broken = tmp_path / 'broken.json'
  broken.write_text('{"seed": ')
  with pytest.raises(ConfigError, match='broken.json is not valid JSON'):
    load_config(str(broken))
  yaml = tmp_path / 'c.yaml'
  yaml.write_text('seed: 1')
  with pytest.raises(ConfigError, match=r'expected a \.toml or \.json'):
    load_config(str(yaml))


def test_fallback_toml_reader_reports_the_line():
  with pytest.raises(ConfigError, match='c.toml, line 2'):
    parse_toml_subset('seed = 1\nthis is not toml\n', 'c.toml')
  parsed = parse_toml_subset("a = 'x # y'  # comment\n[b.c]\nd = [1, 2]\ne = -1.5e-3\nf = true\n")
  assert parsed == {'a': 'x # y', 'b': {'c': {'d': [1, 2], 'e': -1.5e-3, 'f': True}}}


def test_every_option_has_help():
  fields = config_lib.flat_fields()
  assert 'training.num_rounds' in fields and 'output.checkpoint_every' in fields
  assert all(help_text for _, _, help_text in fields.values())
  assert json.loads(config_lib.dumps(load_config()))['training']['num_rounds'] == 200


def test_fallback_toml_reader_reads_exponent_floats_like_tomllib():
  tomllib = pytest.importorskip('tomllib' if sys.version_info >= (3, 11) else 'tomli')

  from fedjax_like.simulation.config_files import parse_toml_subset

  text = 'a = 1e3\nb = 5E2\nc = 0x1f\nd = 12\ne = 1e-3\n'
  assert parse_toml_subset(text) == tomllib.loads(text)


def test_fallback_toml_reader_reads_dotted_keys():
  text = 'name = "x"\ntraining.num_rounds = 5\n[output]\nplot.unused = 1\ncsv = false\n'
  parsed = parse_toml_subset(text)
  assert parsed == {
      'name': 'x', 'training': {'num_rounds': 5}, 'output': {'plot': {'unused': 1}, 'csv': False}
  }
  with pytest.raises(ConfigError, match='defined twice'):
    parse_toml_subset('training.num_rounds = 5\n[training]\nnum_rounds = 6\n')
