"""TFF's StackOverflow tasks (simulation/baselines/stackoverflow/word_prediction_tasks.py and
tag_prediction_tasks.py) on a tiny stackoverflow.sqlite and side files in TFF's formats."""

import numpy as np
import pytest
from task_files import SO_TAGS, SO_WORDS, write_stackoverflow

from fedjax_like.simulation.baselines import ClientSpec, stackoverflow, unbatch
from fedjax_like.simulation.baselines.stackoverflow import tag_prediction_preprocessing as tags_prep
from fedjax_like.simulation.baselines.stackoverflow import word_prediction_preprocessing as prep


@pytest.fixture(scope='module')
def so_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp('stackoverflow')
  return directory, write_stackoverflow(directory)


def test_word_task_uses_the_most_frequent_words(so_dir):
  directory, data = so_dir
  task = stackoverflow.create_word_prediction_task(
      ClientSpec(1, 4, max_elements=3), vocab_size=6, cache_dir=str(directory), download=False)
  model = task.model_fn()
  assert model.num_outputs == 6 + 4 and model.input_spec[0].shape == (20,)
  datasets = task.datasets
  assert datasets.validation_data.client_ids == sorted(data['heldout'])  # heldout validates
  client = datasets.test_data.dataset_for_client('101')
  batched = datasets.eval_preprocess_fn(client)
  assert batched.batch_size == 64
  expected = prep.create_preprocess_fn(ClientSpec(1, 64, shuffle_buffer_size=1), SO_WORDS[:6])
  np.testing.assert_array_equal(unbatch(batched).elements[0],
                                unbatch(expected(client)).elements[0])
  train = datasets.train_preprocess_fn(datasets.train_data.dataset_for_client('100'), seed=0)
  assert train.num_examples == min(3, len(data['train']['100']))  # max_elements


def test_tag_task_uses_the_most_frequent_tags(so_dir):
  directory, _ = so_dir
  task = stackoverflow.create_tag_prediction_task(
      ClientSpec(1, 5), word_vocab_size=8, tag_vocab_size=3, cache_dir=str(directory),
      download=False)
  model = task.model_fn()
  assert model.input_spec[0].shape == (8,) and model.num_outputs == 3
  assert model.loss_reduction == 'sum'
  datasets = task.datasets
  client = datasets.test_data.dataset_for_client('102')
  top_tags = sorted(SO_TAGS, key=SO_TAGS.get, reverse=True)[:3]
  expected = tags_prep.create_preprocess_fn(
      ClientSpec(1, 100, shuffle_buffer_size=1), SO_WORDS[:8], top_tags)(client)
  got = datasets.eval_preprocess_fn(client)
  assert got.batch_size == 100
  for a, b in zip(unbatch(got).elements, unbatch(expected).elements, strict=True):
    np.testing.assert_array_equal(a, b)


def test_bad_arguments(so_dir):
  directory, _ = so_dir
  with pytest.raises(ValueError, match='vocab_size'):
    stackoverflow.create_word_prediction_task(ClientSpec(1, 1), vocab_size=0,
                                              cache_dir=str(directory), download=False)
  with pytest.raises(ValueError, match='tag_vocab_size'):
    stackoverflow.create_tag_prediction_task(ClientSpec(1, 1), tag_vocab_size=0,
                                             cache_dir=str(directory), download=False)
