"""The driver on every dataset (simulation/datasets.py): one round of `fedjax-like train` on tiny
files in TFF's formats, each with its task's model, metrics and evaluation."""

import csv
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from task_files import write_cifar100, write_emnist, write_shakespeare, write_stackoverflow

from fedjax_like.models import from_linen, zoo
from fedjax_like.models.zoo import resnet
from fedjax_like.simulation import cli, config
from fedjax_like.simulation.datasets import load_task

WRITERS = {
    'emnist': write_emnist,
    'shakespeare': write_shakespeare,
    'stackoverflow_word': write_stackoverflow,
    'stackoverflow_tag': write_stackoverflow,
    'cifar100': write_cifar100,
}
EXTRA = {
    'emnist': ['--data.only_digits', 'false', '--model.name', 'logistic'],
    'shakespeare': ['--data.sequence_length', '12'],
    'stackoverflow_word': ['--data.vocab_size', '8', '--data.sequence_length', '6'],
    'stackoverflow_tag': ['--data.vocab_size', '8', '--data.tag_vocab_size', '4'],
    'cifar100': ['--data.crop_size', '8', '--data.distort_train_images', 'true'],
}
METRICS = {
    'emnist': {'accuracy'},
    'shakespeare': {'accuracy', 'num_tokens'},
    'stackoverflow_word': {'accuracy', 'num_tokens', 'accuracy_without_out_of_vocab',
                           'accuracy_without_out_of_vocab_or_end_of_sentence'},
    'stackoverflow_tag': {'precision', 'recall_at_5'},
    'cifar100': {'accuracy'},
}


@pytest.fixture
def small_models(monkeypatch):
  """The tasks' own builders, made small (the driver's path is the same; the published sizes are
  the zoo's tests' business, which only trace them)."""
  from fedjax_like.simulation.baselines.cifar100 import image_classification_tasks
  from fedjax_like.simulation.baselines.shakespeare import char_prediction_tasks
  from fedjax_like.simulation.baselines.stackoverflow import word_prediction_tasks

  monkeypatch.setattr(char_prediction_tasks, 'shakespeare_char_lstm',
                      functools.partial(zoo.shakespeare_char_lstm, lstm_size=8))
  monkeypatch.setattr(word_prediction_tasks, 'stackoverflow_word_lstm',
                      functools.partial(zoo.stackoverflow_word_lstm, embedding_size=4, lstm_size=8))

  def linear_in_place_of_resnet(num_classes, input_shape, num_groups):
    # A ResNet's compile alone takes longer than this whole file; the penalty is kept.
    del num_groups
    spec = (jax.ShapeDtypeStruct(input_shape, jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
    return from_linen(zoo.LogisticRegression(num_classes), spec,
                      regularizer=resnet.l2_regularizer)

  monkeypatch.setattr(image_classification_tasks, 'resnet18', linear_in_place_of_resnet)


@pytest.mark.parametrize('dataset', sorted(WRITERS))
def test_one_round_of_each_dataset(tmp_path, capsys, dataset, small_models):
  cache = tmp_path / 'cache'
  cache.mkdir()
  WRITERS[dataset](cache)
  args = ['train', '--data.dataset', dataset, '--data.cache_dir', str(cache),
          '--data.download', 'false', '--set', f'name={dataset}',
          '--output.root', str(tmp_path / 'runs'), '--training.num_rounds', '1',
          '--training.clients_per_round', '2', '--training.client_epochs', '1',
          '--training.batch_size', '2', '--evaluation.every', '1', '--evaluation.num_clients', '2',
          '--evaluation.batch_size', '4', '--output.tensorboard', 'false', '--output.plot', 'false',
          '--output.progress', 'none', *EXTRA[dataset]]
  assert cli.main(args) == 0, capsys.readouterr().err
  run = tmp_path / 'runs' / dataset
  with open(run / 'metrics.csv') as f:
    (row,) = list(csv.DictReader(f))
  for name in METRICS[dataset] | {'loss', 'num_examples'}:
    assert row[f'client_work/train/{name}'] != '', name
    assert row[f'eval/{name}'] != '', name
  assert np.isfinite(float(row['client_work/train/loss']))
  saved = json.loads((run / 'config.json').read_text())
  assert saved['data']['dataset'] == dataset


def test_train_batches_depend_on_seed_round_and_client_only(tmp_path):
  write_shakespeare(tmp_path)
  cfg = config.load_config(None, [
      ('data.dataset', 'shakespeare'), ('data.cache_dir', str(tmp_path)),
      ('data.sequence_length', '5'), ('training.batch_size', '3')])
  task = load_task(cfg.data, cfg.model, cfg.training, seed=1)
  client = task.train_data.dataset_for_client('ROLE_0')
  first = task.train_preprocess(client, 4)
  np.testing.assert_array_equal(first.batches[0], task.train_preprocess(client, 4).batches[0])
  assert first.batches[0].shape[1:] == (3, 5) and first.batches[0].dtype == np.int64
  x, y = task.eval_preprocess(task.test_data.dataset_for_client('ROLE_0')).elements
  np.testing.assert_array_equal(x[:, 1:], y[:, :-1])


def test_digits_models_read_the_pixels_in_their_shape():
  cfg = config.load_config(None, [('model.name', 'mlp'), ('data.num_clients', '5')])
  task = load_task(cfg.data, cfg.model, cfg.training)
  client = task.train_data.client_ids[0]
  batched = task.train_preprocess(task.train_data.dataset_for_client(client), 1)
  assert batched.batches[0].shape[2:] == (784,) and task.model.input_spec[0].shape == (784,)


def test_image_classifier_names_are_refused_for_other_datasets(tmp_path):
  cfg = config.load_config(None, [('data.dataset', 'shakespeare'), ('model.name', 'cnn'),
                                  ('data.cache_dir', str(tmp_path))])
  with pytest.raises(config.ConfigError, match="model.name = 'cnn'.*set model.name = 'auto'"):
    load_task(cfg.data, cfg.model, cfg.training)


def test_missing_files_name_the_dataset_and_the_file(tmp_path):
  cfg = config.load_config(None, [('data.dataset', 'cifar100'), ('data.cache_dir', str(tmp_path)),
                                  ('data.download', 'false')])
  with pytest.raises(config.ConfigError, match="data.dataset = 'cifar100' cannot be loaded") as e:
    load_task(cfg.data, cfg.model, cfg.training)
  assert 'cifar100.sqlite' in str(e.value)
