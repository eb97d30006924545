"""The driver on tensorflow-datasets (simulation/tfds_task.py): one round of `fedjax-like train
--data.dataset tfds` on tfds's mock data, the task's arrays against NumPy re-derivations, and the
errors. As tests/data/test_tfds.py, under the same guard (tests/data/_tfds_offline.py): offline (a
connection attempt fails at once), no TensorFlow (an import of it fails the test), a deadline, and
no real tfds data dir."""

from __future__ import annotations

import csv
import json
import pathlib
import sys

import numpy as np
import pytest

tfds = pytest.importorskip('tensorflow_datasets')

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'data'))
import _tfds_offline  # noqa: E402

from fedjax_like.data.sources import tfds as fl_tfds  # noqa: E402
from fedjax_like.simulation import cli, config, tfds_task  # noqa: E402
from fedjax_like.simulation.datasets import load_task  # noqa: E402

_DEADLINE_S = 120
_MOCK = dict(num_examples=30, policy=tfds.testing.MockPolicy.USE_CODE)


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
  yield from _tfds_offline.guard(monkeypatch, tmp_path, _DEADLINE_S)


def _config(*pairs):
  pairs = [('data.dataset', 'tfds'), ('data.num_clients', '3'), *pairs]
  return config.load_config(None, [(k, str(v)) for k, v in pairs])


def _task(*pairs):
  cfg = _config(*pairs)
  return load_task(cfg.data, cfg.model, cfg.training, seed=cfg.seed)


@pytest.mark.parametrize('name, extra', [
    ('mnist', ['--data.partitioner', 'iid', '--model.name', 'logistic']),
    ('imdb_reviews', ['--data.partitioner', 'shards', '--data.vocab_size', '16']),
])
def test_one_round_of_train_on_mock_data(tmp_path, capsys, name, extra):
  args = ['train', '--data.dataset', 'tfds', '--data.tfds_name', name, '--data.num_clients', '3',
          '--set', f'name=tfds_{name}', '--output.root', str(tmp_path / 'runs'),
          '--training.num_rounds', '1', '--training.clients_per_round', '2',
          '--training.client_epochs', '1', '--training.batch_size', '4',
          '--training.sampling', 'fixed', '--evaluation.every', '1',
          '--evaluation.batch_size', '8', '--output.tensorboard', 'false',
          '--output.plot', 'false', '--output.progress', 'none', *extra]
  with tfds.testing.mock_data(**_MOCK):
    assert cli.main(args) == 0, capsys.readouterr().err
  run = tmp_path / 'runs' / f'tfds_{name}'
  with open(run / 'metrics.csv') as f:
    (row,) = list(csv.DictReader(f))
  # 30 mock examples a split in 3 clients of 10 (iid, or shards of 5 x 2): the fixed cohort of 2
  # trains on 20 in one epoch, and evaluation covers the whole test split.
  assert float(row['client_work/train/num_examples']) == 20
  assert float(row['eval/num_examples']) == 30
  for metric in ('loss', 'accuracy'):
    assert np.isfinite(float(row[f'client_work/train/{metric}'])), metric
    assert 0 <= float(row['eval/accuracy']) <= 1
  saved = json.loads((run / 'config.json').read_text())
  assert (saved['data']['dataset'], saved['data']['tfds_name']) == ('tfds', name)


def test_images_are_scaled_to_the_unit_interval_for_a_zoo_cnn():
  with tfds.testing.mock_data(**_MOCK):
    task = _task(('data.tfds_name', 'mnist'), ('data.partitioner', 'iid'))
    raw = fl_tfds.to_arrays(fl_tfds.data_source('mnist', 'test'))
  assert task.model.input_spec[0].shape == (28, 28, 1) and task.model.num_outputs == 10
  client = task.test_data.dataset_for_client('1')
  x, y = task.eval_preprocess(client).elements
  assert x.dtype == np.float32 and y.dtype == np.int32
  np.testing.assert_array_equal(x, client.elements['image'] / np.float32(255))
  np.testing.assert_array_equal(y, client.elements['label'])
  # The three test clients are the test split, each example once.
  rows = np.concatenate([task.test_data.dataset_for_client(c).elements['image'].reshape(-1, 784)
                         for c in task.test_data.client_ids])
  assert sorted(map(bytes, rows)) == sorted(map(bytes, raw['image'].reshape(-1, 784)))


def test_training_batches_are_a_seeded_shuffle_of_the_client():
  with tfds.testing.mock_data(**_MOCK):
    task = _task(('data.tfds_name', 'cifar10'), ('data.partitioner', 'iid'),
                 ('model.name', 'fedavg_cnn'), ('training.batch_size', '4'),
                 ('training.client_epochs', '2'))
  client = task.train_data.dataset_for_client('2')
  first, again = task.train_preprocess(client, 3), task.train_preprocess(client, 3)
  np.testing.assert_array_equal(first.batches[0], again.batches[0])
  assert first.batches[0].shape == (5, 4, 32, 32, 3) and first.mask.sum() == 20
  x = first.batches[0].reshape(-1, 32, 32, 3)[first.mask.reshape(-1)]
  raw = client.elements['image'].astype(np.float32) / 255
  for epoch in (x[:10], x[10:]):  # Each epoch is a permutation of the client's examples.
    assert sorted(map(bytes, epoch)) == sorted(map(bytes, raw))


def _reference_words(text: str) -> list[str]:
  cleaned = ''.join(c if c.isalnum() or c == '_' else ' ' for c in text.lower())
  return cleaned.split()


def test_bag_of_words_against_a_plain_python_reference():
  texts = [b'The cat, the HAT!', 'a dog; a cat', b'', b'zebra', 'Caf\u00e9 au lait caf\u00e9']
  vocab = tfds_task.build_vocab(texts, 4)
  counts = {}
  for t in texts:
    for w in _reference_words(t.decode() if isinstance(t, bytes) else t):
      counts[w] = counts.get(w, 0) + 1
  expected_vocab = sorted(counts, key=lambda w: (-counts[w], w))[:4]
  assert vocab == expected_vocab == ['a', 'café', 'cat', 'the']  # Ties alphabetically.
  index = {w: i for i, w in enumerate(vocab)}
  bags = tfds_task.bag_of_words(np.array(texts, dtype=object), index)
  for text, bag in zip(texts, bags, strict=True):
    words = [w for w in _reference_words(text.decode() if isinstance(text, bytes) else text)
             if w in index]
    want = np.zeros(len(vocab), np.float32)
    for w in words:
      want[index[w]] += 1 / len(words)
    np.testing.assert_allclose(bag, want, rtol=1e-6)
  assert bags[3].sum() == 0 and bags.dtype == np.float32  # 'zebra' is out of vocabulary.


def test_text_with_a_user_field_makes_natural_clients_and_counts_plain_integer_classes():
  with tfds.testing.mock_data(**_MOCK):
    task = _task(('data.tfds_name', 'sentiment140'), ('data.vocab_size', '8'))
    raw = fl_tfds.to_arrays(fl_tfds.data_source('sentiment140', 'train'))
    test = fl_tfds.to_arrays(fl_tfds.data_source('sentiment140', 'test'))
  users = sorted({u.decode() for u in raw['user']})
  assert task.train_data.client_ids == users  # 'auto': natural ids from the 'user' field.
  # polarity is a plain int32 (no ClassLabel): max + 1 over both splits.
  assert task.model.num_outputs == int(max(raw['polarity'].max(), test['polarity'].max())) + 1
  assert task.model.input_spec[0].shape == (8,)
  x, _ = task.eval_preprocess(task.train_data.dataset_for_client(users[0])).elements
  assert x.shape[1:] == (8,) and np.all((x.sum(1) == 0) | np.isclose(x.sum(1), 1))


@pytest.mark.parametrize('pairs, match', [
    ([('data.tfds_name', 'imdb_reviews'), ('model.name', 'cnn')],
     "model.name = 'cnn' does not read texts.*'logistic', 'mlp'"),
    ([('data.tfds_name', 'mnist'), ('data.partitioner', 'natural_id')],
     "mnist has no user field.*choose 'iid'"),
    ([('data.tfds_name', 'mnist'), ('data.tfds_label_feature', 'digit')],
     r"data.tfds_label_feature = 'digit' is not a feature of mnist; its features: \['image', "
     r"'label'\]"),
    ([('data.tfds_name', 'mnist'), ('data.tfds_input_feature', 'label')],
     r"data.tfds_input_feature = 'label' is int64\[\]; the driver trains on images .*or texts"),
    ([('data.tfds_name', 'no_such_dataset')],
     "data.tfds_name = 'no_such_dataset': Dataset no_such_dataset not found.*list_builders"),
])
def test_options_that_do_not_fit_the_dataset_name_the_option(pairs, match):
  with tfds.testing.mock_data(**_MOCK):
    with pytest.raises(config.ConfigError, match=match):
      _task(*pairs)


def test_loading_errors_name_the_extra_and_the_data_dir(tmp_path, monkeypatch):
  empty = tmp_path / 'empty'
  with pytest.raises(config.ConfigError) as error:
    _task(('data.tfds_name', 'mnist'), ('data.cache_dir', str(empty)), ('data.download', 'false'))
  message = str(error.value)
  assert "data.dataset = 'tfds' cannot be loaded" in message and str(empty) in message
  assert 'data.cache_dir' in message and 'download=True' in message
  with pytest.raises(config.ConfigError, match='needs data.tfds_name'):
    config.load_config(None, [('data.dataset', 'tfds')])
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)
  with pytest.raises(config.ConfigError, match=r'pip install "fedjax_like\[tfds\]"'):
    _task(('data.tfds_name', 'mnist'))
