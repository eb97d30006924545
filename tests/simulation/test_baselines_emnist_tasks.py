"""TFF's EMNIST character recognition task (simulation/baselines/emnist/char_recognition_tasks.py)
on a tiny emnist_all.sqlite in TFF's schema."""

import jax
import numpy as np
import pytest
from task_files import write_emnist

from fedjax_like.simulation.baselines import ClientSpec, emnist, unbatch


@pytest.mark.parametrize('only_digits, classes', [(True, 10), (False, 62)])
def test_task_from_tffs_file(tmp_path, only_digits, classes):
  data = write_emnist(tmp_path)
  task = emnist.create_character_recognition_task(
      ClientSpec(1, 3), only_digits=only_digits, cache_dir=str(tmp_path), download=False)
  model = task.model_fn()
  assert model.num_outputs == classes and model.input_spec[0].shape == (28, 28, 1)
  split = 'digits_only_test' if only_digits else 'all_test'
  client = task.datasets.test_data.dataset_for_client('f0001_00')
  x, y = unbatch(task.datasets.eval_preprocess_fn(client)).elements
  np.testing.assert_array_equal(x[..., 0], np.stack([e['pixels'] for e in data[split]['f0001_00']]))
  assert y.tolist() == [e['label'] for e in data[split]['f0001_00']]


def test_model_ids(tmp_path):
  write_emnist(tmp_path)
  train, test = emnist.char_recognition_tasks.emnist.load_data(False, str(tmp_path), False)
  two_nn = 784 * 200 + 200 + 200 * 200 + 200 + 200 * 62 + 62
  fedavg_cnn = 1_663_370 + 52 * 513  # McMahan et al.'s count at 10 classes, 52 more outputs
  for model_id, count in (('cnn', fedavg_cnn), ('2nn', two_nn)):
    task = emnist.create_character_recognition_task_from_datasets(
        ClientSpec(1, 2), None, model_id, False, train, test)
    weights = jax.eval_shape(task.model_fn().init_fn, jax.random.key(0))
    assert sum(int(np.prod(s.shape)) for s in jax.tree.leaves(weights.trainable)) == count
  with pytest.raises(ValueError, match='model_id must be one of'):
    emnist.create_character_recognition_task_from_datasets(
        ClientSpec(1, 2), None, 'resnet', False, train, test)
