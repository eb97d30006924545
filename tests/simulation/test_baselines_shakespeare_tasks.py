"""TFF's Shakespeare task (simulation/baselines/shakespeare/char_prediction_tasks.py) on a tiny
shakespeare.sqlite in TFF's schema."""

import numpy as np
import pytest
from task_files import write_shakespeare

from fedjax_like.simulation.baselines import ClientSpec, shakespeare, unbatch
from fedjax_like.simulation.baselines.shakespeare import char_prediction_preprocessing as prep


def test_task_from_tffs_file(tmp_path):
  data = write_shakespeare(tmp_path)
  task = shakespeare.create_character_prediction_task(
      ClientSpec(1, 4), cache_dir=str(tmp_path), download=False)
  model = task.model_fn()
  assert model.input_spec[0].shape == (80,) and model.num_outputs == 90
  assert set(model.metric_fns) == {'num_tokens', 'accuracy'}
  datasets = task.datasets
  assert datasets.validation_data is None and datasets.train_data.client_ids == [
      'ROLE_0', 'ROLE_1', 'ROLE_2']
  # Evaluation: no shuffle, batches of 32 rows, TFF's rows in order.
  client = datasets.test_data.dataset_for_client('ROLE_1')
  batched = datasets.eval_preprocess_fn(client)
  assert batched.batch_size == 32
  snippets = [e['snippets'] for e in data['test']['ROLE_1']]
  rows = prep.to_sequences(np.array(snippets, dtype=object), 80)
  x, y = unbatch(batched).elements
  np.testing.assert_array_equal(x, rows[:, :-1])
  np.testing.assert_array_equal(y, rows[:, 1:])


def test_options_reach_the_model_and_bad_lengths_fail(tmp_path):
  write_shakespeare(tmp_path)
  train, test = shakespeare.char_prediction_tasks.shakespeare.load_data(str(tmp_path),
                                                                        download=False)
  task = shakespeare.create_character_prediction_task_from_datasets(
      ClientSpec(1, 2), None, 10, train, test, loss_mask='none')
  assert task.model_fn().input_spec[0].shape == (10,)
  with pytest.raises(ValueError, match='sequence_length'):
    shakespeare.create_character_prediction_task_from_datasets(
        ClientSpec(1, 2), None, 0, train, test)
