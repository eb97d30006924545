"""BaselineTask and BaselineTaskDatasets (simulation/baselines/baseline_task.py), and the shared
shuffle -> repeat -> take of simulation/baselines/client_spec.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_like.data import ClientData, Dataset
from fedjax_like.models import from_linen, zoo
from fedjax_like.simulation.baselines import (
    BaselineTask,
    BaselineTaskDatasets,
    ClientSpec,
    unbatch,
)
from fedjax_like.simulation.baselines.client_spec import shuffle_repeat_take


def clients():
  rng = np.random.default_rng(0)
  return ClientData.from_clients_dict({
      c: {'x': rng.random((n, 3)).astype(np.float32), 'y': np.arange(n) % 2}
      for c, n in (('a', 5), ('b', 0), ('c', 7))})


def preprocess(dataset, seed=None):
  x, y = dataset.elements['x'], dataset.elements['y']
  return Dataset((x, y.astype(np.int64)), client_id=dataset.client_id).batch(4)


def test_shuffle_repeat_take_is_tffs_order_of_operations():
  data = Dataset({'v': np.arange(6)})
  kept = shuffle_repeat_take(data, ClientSpec(3, 1, max_elements=14, shuffle_buffer_size=1), 9)
  assert kept.elements['v'].tolist() == [0, 1, 2, 3, 4, 5] * 2 + [0, 1]
  shuffled = shuffle_repeat_take(data, ClientSpec(2, 1), 9, seed=4).elements['v']
  assert sorted(shuffled[:6].tolist()) == sorted(shuffled[6:].tolist()) == list(range(6))
  assert shuffled[:6].tolist() != shuffled[6:].tolist()  # A fresh permutation each epoch.
  again = shuffle_repeat_take(data, ClientSpec(2, 1), 9, seed=4).elements['v']
  np.testing.assert_array_equal(shuffled, again)


def test_unbatch_keeps_the_real_examples_in_order():
  batched = Dataset((np.arange(10), np.arange(10) * 2), client_id='z').batch(4)
  flat = unbatch(batched)
  assert flat.client_id == 'z' and flat.elements[0].tolist() == list(range(10))


def test_task_checks_the_model_against_the_preprocessed_examples():
  data = clients()
  datasets = BaselineTaskDatasets(data, data, None, preprocess, preprocess)
  spec = datasets.element_type_structure
  assert spec[0].shape == (3,) and spec[1].dtype == np.int64  # From client 'a' ('b' is empty).

  def model_fn(width=3):
    module = zoo.LogisticRegression(2)
    return from_linen(module, (jax.ShapeDtypeStruct((width,), jnp.float32),
                                          jax.ShapeDtypeStruct((), jnp.int32)))

  task = BaselineTask(datasets, model_fn)  # int64 labels feed the int32 input: accepted.
  assert task.model_fn().input_spec[0].shape == (3,)
  with pytest.raises(ValueError, match=r'x is float32\[3\] after preprocessing.*float32\[4\]'):
    BaselineTask(datasets, lambda: model_fn(4))
  with pytest.raises(TypeError, match='Model'):
    BaselineTask(datasets, lambda: 'not a model')


def test_sample_train_clients_and_centralized_test_data():
  data = clients()
  datasets = BaselineTaskDatasets(data, data, None, preprocess, preprocess)
  sampled = datasets.sample_train_clients(2, random_seed=0)
  assert len(sampled) == 2 and {d.client_id for d in sampled} <= {'a', 'b', 'c'}
  central = datasets.get_centralized_test_data()
  assert central.num_examples == 12
