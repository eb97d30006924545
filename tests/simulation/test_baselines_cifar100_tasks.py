"""TFF's CIFAR-100 task (simulation/baselines/cifar100/image_classification_tasks.py) on a tiny
cifar100.sqlite in TFF's schema."""

import numpy as np
import pytest
from task_files import write_cifar100

from fedjax_like.simulation.baselines import ClientSpec, cifar100, unbatch
from fedjax_like.simulation.baselines.cifar100 import image_classification_preprocessing as prep


def test_task_from_tffs_file(tmp_path):
  data = write_cifar100(tmp_path)
  task = cifar100.create_image_classification_task(
      ClientSpec(1, 4), distort_train_images=True, cache_dir=str(tmp_path), download=False)
  model = task.model_fn()
  assert model.input_spec[0].shape == (24, 24, 3) and model.num_outputs == 100
  assert model.regularizer is not None
  client = task.datasets.test_data.dataset_for_client('2')
  x, y = unbatch(task.datasets.eval_preprocess_fn(client)).elements
  images = np.stack([e['image'] for e in data['test']['2']]).astype(np.float32)
  np.testing.assert_allclose(x, prep.per_image_standardization(images[:, 4:28, 4:28]), atol=1e-5)
  assert y.tolist() == [e['label'] for e in data['test']['2']]
  train = task.datasets.train_preprocess_fn(task.datasets.train_data.dataset_for_client('0'), 1)
  assert train.batches[0].shape[2:] == (24, 24, 3)


def test_bad_model_and_crop(tmp_path):
  write_cifar100(tmp_path)
  with pytest.raises(ValueError, match="model argument must be one of \\['resnet18'\\]"):
    cifar100.create_image_classification_task(ClientSpec(1, 1), model_id='vgg',
                                              cache_dir=str(tmp_path), download=False)
  with pytest.raises(ValueError, match='between 1 and 32'):
    cifar100.create_image_classification_task(ClientSpec(1, 1), crop_height=40,
                                              cache_dir=str(tmp_path), download=False)
