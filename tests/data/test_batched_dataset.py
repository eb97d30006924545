"""BatchedDataset: the tf.data methods TFF tutorials call after batch, and refusals that say why."""

import numpy as np
import pytest

from fedjax_like.data import Dataset


def make(n):
  return Dataset((np.arange(n * 4, dtype=np.float32).reshape(n, 4), np.arange(n)))


def test_batch_then_repeat_keeps_each_short_batch_as_tf_data():
  repeated = make(7).batch(3).repeat(2)
  np.testing.assert_array_equal(repeated.mask.sum(axis=1), [3, 3, 1, 3, 3, 1])
  assert repeated.batches[1][repeated.mask].tolist() == list(range(7)) * 2
  assert repeated.take(2).num_batches == 2 and repeated.prefetch(2) is repeated


def test_batch_format_fn_sees_the_real_examples_of_each_batch():
  seen = []

  def batch_format_fn(batch):
    x, y = batch
    seen.append(x.shape[0])
    return {'x': x.reshape(-1, 2, 2), 'y': y}

  formatted = make(7).batch(3).map(batch_format_fn, num_parallel_calls=-1)
  assert seen == [3, 3, 1] and formatted.batches['x'].shape == (3, 3, 2, 2)
  np.testing.assert_array_equal(formatted.batches['x'][2, 1:], 0)  # padding stays zeros
  assert formatted.unbatch().elements['y'].tolist() == list(range(7))
  with pytest.raises(ValueError, match='keep the batch axis'):
    make(4).batch(2).map(lambda b: {'x': b[0].reshape(-1)})


def test_methods_that_do_not_fit_batches_name_the_equivalent():
  batched = make(4).batch(2)
  with pytest.raises(TypeError, match=r'ds.filter\(pred\).batch\(b\)'):
    batched.filter(lambda b: True)
  with pytest.raises(TypeError, match=r'ds.shuffle\(n, seed=s\).batch\(b\)'):
    batched.shuffle(10)
  with pytest.raises(TypeError, match=r'unbatch\(\) first'):
    batched.batch(2)
  with pytest.raises(ValueError, match='repeats forever'):
    batched.repeat()
