"""Dataset, ClientData, packing and the offline digits source."""

import numpy as np
import pytest

from fedjax_like.data import ClientData, Dataset, digits, pack_cohort


def make(n, client_id='c'):
  return Dataset({'pixels': np.arange(n * 4, dtype=np.float32).reshape(n, 2, 2), 'label': np.arange(n)},
                 client_id=client_id)


def test_map_repeat_batch_shapes_and_mask():
  ds = make(7).map(lambda e: (e['pixels'].reshape(-1), e['label'])).repeat(2)
  assert len(ds) == 14
  batched = ds.batch(4)
  x, y = batched.batches
  assert x.shape == (4, 4, 4) and y.shape == (4, 4)
  np.testing.assert_array_equal(batched.mask.sum(axis=1), [4, 4, 4, 2])
  np.testing.assert_array_equal(y[3], [5, 6, 0, 0])  # ragged last batch padded with zeros
  np.testing.assert_array_equal(y.reshape(-1)[:14], np.concatenate([np.arange(7)] * 2))
  assert batched.num_examples == 14
  dropped = ds.batch(4, drop_remainder=True)
  assert dropped.num_batches == 3 and dropped.mask.all()
  pairs = list(batched)
  assert len(pairs) == 4 and pairs[3][1].tolist() == [True, True, False, False]


def test_vectorized_map_equals_per_example_map():
  ds = make(5)
  fn = lambda e: {'x': e['pixels'] * 2, 'y': e['label']}
  a = ds.map(fn).elements
  b = ds.map(fn, vectorized=True).elements
  np.testing.assert_array_equal(a['x'], b['x'])


def test_shuffle_is_a_seeded_permutation():
  ds = make(20)
  s1 = ds.shuffle(seed=3).elements['label']
  s2 = ds.shuffle(seed=3).elements['label']
  s3 = ds.shuffle(seed=4).elements['label']
  np.testing.assert_array_equal(s1, s2)
  assert sorted(s1.tolist()) == list(range(20)) and s1.tolist() != s3.tolist()


def test_bad_dataset_arguments():
  with pytest.raises(ValueError, match='same number of examples'):
    Dataset({'a': np.zeros(3), 'b': np.zeros(4)})
  with pytest.raises(ValueError, match='positive integer'):
    make(3).repeat(0)
  with pytest.raises(ValueError, match='positive integer'):
    make(3).batch(0)


def test_client_data_in_memory_and_lazy():
  clients = {'a': {'v': np.ones(3)}, 'b': {'v': np.zeros(5)}}
  cd = ClientData.from_clients_dict(clients)
  assert cd.client_ids == ['a', 'b'] and cd.client_sizes() == {'a': 3, 'b': 5}
  assert len(cd.create_tf_dataset_for_client('b')) == 5
  calls = []

  def load(cid):
    calls.append(cid)
    return clients[cid]

  lazy = ClientData.from_loader(['a', 'b'], load).preprocess(lambda d: d.repeat(2))
  assert calls == []
  assert len(lazy.dataset_for_client('a')) == 6 and calls == ['a']
  with pytest.raises(KeyError, match="Unknown client_id 'z'"):
    lazy.dataset_for_client('z')
  assert len(cd.create_dataset_from_all_clients()) == 8
  assert cd.subset(['b']).client_ids == ['b']


def test_pack_cohort_pads_steps_and_checks_structure():
  a = make(5, 'a').map(lambda e: (e['pixels'], e['label'])).batch(2)
  b = make(2, 'b').map(lambda e: (e['pixels'], e['label'])).batch(2)
  packed = pack_cohort([a, b])
  assert packed.mask.shape == (2, 3, 2)
  np.testing.assert_array_equal(packed.num_examples, [5, 2])
  assert packed.padding_fraction == pytest.approx(1 - 7 / 12)
  c = make(3, 'c').batch(2)  # a dict, not a tuple: different structure
  with pytest.raises(ValueError, match='Client c: its examples have structure'):
    pack_cohort([a, c])
  d = make(3, 'd').map(lambda e: (e['pixels'], e['label'])).batch(3)
  with pytest.raises(ValueError, match='Client d: batch size 3'):
    pack_cohort([a, d])
  with pytest.raises(ValueError, match='num_steps'):
    pack_cohort([a], num_steps=1)


def test_digits_partition_is_seeded_non_iid_and_complete():
  labels = np.repeat(np.arange(10), 50)
  parts = digits.partition(labels, num_clients=20, alpha=0.3, seed=1)
  flat = np.concatenate(parts)
  assert sorted(flat.tolist()) == list(range(500))  # disjoint and complete
  again = digits.partition(labels, num_clients=20, alpha=0.3, seed=1)
  assert all(np.array_equal(p, q) for p, q in zip(parts, again))
  # Non-IID: the average client holds far fewer than all 10 labels in even shares.
  dominant = np.mean([np.bincount(labels[p], minlength=10).max() / len(p) for p in parts])
  assert dominant > 0.3
  sizes = [len(p) for p in parts]
  assert max(sizes) > 2 * min(sizes)


def test_digits_load_data_is_emnist_shaped():
  train, test = digits.load_data(num_clients=30)
  assert train.client_ids == test.client_ids and len(train) == 30
  ds = train.dataset_for_client(train.client_ids[0])
  spec = ds.element_spec
  assert spec['pixels'].shape == (28, 28) and spec['pixels'].dtype == np.float32
  assert spec['label'].shape == () and spec['label'].dtype == np.int32
  px = ds.elements['pixels']
  assert px.min() >= 0.0 and px.max() <= 1.0 and np.median(px) > 0.9  # background is 1.0
  total = sum(train.client_sizes().values()) + sum(test.client_sizes().values())
  assert total == 1797


def test_tf_data_argument_conventions():
  ds = make(10)
  # tf.data's order: shuffle(buffer_size, seed=...).
  np.testing.assert_array_equal(
      ds.shuffle(100, seed=5).elements['label'], ds.shuffle(seed=5).elements['label']
  )
  assert len(ds.take(-1)) == 10 and len(ds.take(3)) == 3
  with pytest.raises(ValueError, match='repeats forever'):
    ds.repeat()


def test_pack_groups_pads_each_block_to_its_own_steps_and_checks_the_whole_cohort():
  from fedjax_like.data.packing import pack_groups, take_clients

  rng = np.random.default_rng(0)
  clients = [
      Dataset((rng.normal(size=(n, 3)).astype(np.float32), np.arange(n)), client_id=f'c{n}')
      .batch(2)
      for n in (9, 1, 7, 2)
  ]  # 5, 1, 4, 1 steps
  long, short = pack_groups(clients, [([0, 2], 6), ([3, 1], None)])
  assert long.batches[0].shape == (2, 6, 2, 3) and short.batches[0].shape == (2, 1, 2, 3)
  assert long.client_ids == ('c9', 'c7') and short.client_ids == ('c2', 'c1')
  whole = pack_cohort(clients)  # the same examples as one padded block, row for row
  padded_mask = np.pad(whole.mask, ((0, 0), (0, 1), (0, 0)))  # 6 steps
  for part, rows in ((long, [0, 2]), (short, [3, 1])):
    np.testing.assert_array_equal(part.mask, padded_mask[rows, : part.num_steps])
    real = whole.batches[0][rows][whole.mask[rows]]
    np.testing.assert_array_equal(part.batches[0][part.mask], real)
  cut = take_clients(whole, [0, 2], 6)  # from a packed cohort: padded up to the budget
  np.testing.assert_array_equal(cut.batches[0], long.batches[0])
  np.testing.assert_array_equal(cut.mask, long.mask)
  with pytest.raises(ValueError, match='would cut real steps'):
    take_clients(whole, [0, 2], 3)
  with pytest.raises(ValueError, match='num_steps=3 is smaller'):
    pack_groups(clients, [([0, 2], 3), ([3, 1], None)])
  odd = Dataset((np.zeros((4, 3), np.float32), np.arange(4)), client_id='odd').batch(4)
  with pytest.raises(ValueError, match='Client odd: batch size 4'):  # checked across blocks
    pack_groups(clients + [odd], [([0, 2], None), ([4], None)])



def test_tf_data_methods_of_tff_tutorials():
  ds = make(7).map(lambda e: (e['pixels'].reshape(-1), e['label']), num_parallel_calls=-1)
  assert ds.prefetch(4).cache() is ds
  odd = make(9).filter(lambda e: e['label'] % 2 == 1)
  assert odd.elements['label'].tolist() == [1, 3, 5, 7]
  assert odd.skip(1).take(2).elements['label'].tolist() == [3, 5] and len(odd.skip(-1)) == 0
  nested = Dataset({'v': np.arange(12).reshape(4, 3)}).unbatch()
  assert nested.elements['v'].tolist() == list(range(12))
  padded = Dataset({'v': np.ones((5, 2))}).padded_batch(
      2, padded_shapes={'v': [4]}, padding_values={'v': -1.0}
  )
  assert padded.batches['v'].shape == (3, 2, 4)
  assert padded.batches['v'][0, 0].tolist() == [1, 1, -1, -1]


def test_reshuffle_each_iteration_as_tf_data():
  ds = Dataset({'label': np.arange(10)})
  twice = ds.shuffle(10, seed=3).repeat(2).elements['label']
  rng = np.random.default_rng(3)
  np.testing.assert_array_equal(twice, np.concatenate([rng.permutation(10), rng.permutation(10)]))
  assert twice[:10].tolist() != twice[10:].tolist()
  same = ds.shuffle(10, seed=3, reshuffle_each_iteration=False).repeat(2).elements['label']
  assert same[:10].tolist() == same[10:].tolist() == twice[:10].tolist()
  # Later stages see each iteration's own order; iterating again gives the next order.
  mapped = ds.shuffle(10, seed=3).map(lambda e: {'y': e['label'] * 2}).batch(4).repeat(2)
  np.testing.assert_array_equal(mapped.batches['y'][mapped.mask], 2 * twice)
  shuffled = ds.shuffle(10, seed=3)
  first, second = [e['label'] for e in shuffled], [e['label'] for e in shuffled]
  assert first == twice[:10].tolist() and second == twice[10:].tolist()


def test_create_tf_dataset_from_all_clients_shuffles_clients_as_tff():
  clients = {str(i): {'v': np.full(i + 1, i)} for i in range(5)}
  cd = ClientData.from_clients_dict(clients)
  order = list(cd.client_ids)
  np.random.RandomState(seed=4).shuffle(order)
  expected = np.concatenate([clients[c]['v'] for c in order])
  joined = cd.create_tf_dataset_from_all_clients(seed=4)
  np.testing.assert_array_equal(joined.elements['v'], expected)
