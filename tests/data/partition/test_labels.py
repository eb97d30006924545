"""Tests for the label-skew partitioners, against plain-loop re-writings of Flower's algorithms
(same random draws in the same order, so the client sets must match exactly) and statistical
checks with fixed seeds."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fedjax_like.data import partition as P


def _labels(n=3000, num_classes=10, seed=0):
  return np.random.default_rng(seed).integers(0, num_classes, n)


def _sets(part):
  return [sorted(ix.tolist()) for ix in part.index_lists()]


def _flower_dirichlet(labels, m, alpha, min_size, self_balancing, seed, max_tries=10):
  """Flower's DirichletPartitioner._determine_partition_id_to_indices_if_needed, as loops."""
  rng = np.random.default_rng(seed)
  alpha = np.full(m, float(alpha))
  avg = len(labels) / m
  for _ in range(max_tries + 1):
    parts = {c: [] for c in range(m)}
    for k in sorted(set(labels.tolist())):
      idx = np.nonzero(labels == k)[0]
      p = rng.dirichlet(alpha)
      share = {c: p[c] for c in range(m)}
      if self_balancing:
        for c in range(m):
          if len(parts[c]) > avg:
            share[c] = 0
        total = sum(share.values())
        share = {c: v / total for c, v in share.items()}
      cuts = (np.cumsum(list(share.values())) * len(idx)).astype(int)[:-1]
      for c, piece in enumerate(np.split(idx, cuts)):
        parts[c].extend(piece.tolist())
    if min(len(v) for v in parts.values()) >= min_size:
      return [sorted(parts[c]) for c in range(m)]
  raise AssertionError('reference gave up')


@pytest.mark.parametrize('self_balancing', [False, True])
def test_dirichlet_matches_flower_and_covers_every_example(self_balancing):
  labels = _labels()
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    part = P.DirichletPartitioner(
        20, alpha=0.5, min_partition_size=5, self_balancing=self_balancing, seed=7
    )({'label': labels})
  assert _sets(part) == _flower_dirichlet(labels, 20, 0.5, 5, self_balancing, seed=7)
  assert np.all(np.bincount(part.indices, minlength=len(labels)) == 1)
  assert part.sizes.min() >= 5


def test_dirichlet_same_seed_same_partition():
  labels = _labels()
  a = P.DirichletPartitioner(30, alpha=0.3, min_partition_size=0, seed=1)(labels)
  b = P.DirichletPartitioner(30, alpha=0.3, min_partition_size=0, seed=1)(labels)
  c = P.DirichletPartitioner(30, alpha=0.3, min_partition_size=0, seed=2)(labels)
  np.testing.assert_array_equal(a.indices, b.indices)
  np.testing.assert_array_equal(a.offsets, b.offsets)
  assert not np.array_equal(a.indices, c.indices)


def test_dirichlet_large_alpha_approaches_iid_small_alpha_does_not():
  # Each client's class fractions against the global ones. Under Dir(alpha) over m clients a
  # client's share of class k has sd sqrt((1/m)(1 - 1/m)/(m alpha + 1)); with alpha = 1e5 and
  # m = 10 that is 3e-4 of a class, so fractions stay within 0.01 of the global ones (the
  # multinomial floor of an IID split of 2,000 examples a client is sd 0.0067 a class; 0.03
  # is over 4 sd of that). With alpha = 0.1 the same distance is over 0.3.
  labels = _labels(20_000, 10, seed=4)
  global_fraction = np.bincount(labels) / len(labels)
  distance = {}
  for alpha in (1e5, 0.1):
    part = P.DirichletPartitioner(10, alpha=alpha, min_partition_size=0, seed=0)(labels)
    fractions = P.label_histogram(part, labels).fractions()
    distance[alpha] = np.abs(fractions - global_fraction).max()
  iid = P.IidPartitioner(10)(labels)
  iid_distance = np.abs(P.label_histogram(iid, labels).fractions() - global_fraction).max()
  assert distance[1e5] < 0.03 and iid_distance < 0.03
  assert distance[0.1] > 0.3


def test_dirichlet_min_size_retries_then_errors():
  labels = _labels(400, 4, seed=2)
  with pytest.warns(UserWarning, match='drawing again'):
    part = P.DirichletPartitioner(8, alpha=0.3, min_partition_size=20, seed=0)(labels)
  assert part.sizes.min() >= 20
  with pytest.warns(UserWarning), pytest.raises(ValueError, match='after 3 draws'):
    P.DirichletPartitioner(40, alpha=0.01, min_partition_size=5, max_tries=2, seed=0)(labels)
  with pytest.raises(ValueError, match='needs 440 examples'):
    P.DirichletPartitioner(40, alpha=1.0, min_partition_size=11)(labels)


def test_dirichlet_tiny_alpha_self_balancing_never_nan():
  # With alpha = 1e-3 almost every draw puts a class on one client; once that client is full the
  # open clients' shares are all zero (Flower divides 0 by 0 here).
  labels = _labels(2000, 50, seed=5)
  part = P.DirichletPartitioner(
      10, alpha=1e-3, min_partition_size=0, self_balancing=True, seed=3
  )(labels)
  assert np.all(np.bincount(part.indices, minlength=2000) == 1)


def test_dirichlet_argument_errors():
  with pytest.raises(ValueError, match='positive'):
    P.DirichletPartitioner(3, alpha=0.0)
  with pytest.raises(ValueError, match='one per partition'):
    P.DirichletPartitioner(3, alpha=[1.0, 2.0])
  with pytest.raises(KeyError, match="no column 'label'"):
    P.DirichletPartitioner(3, alpha=1.0)({'y': np.zeros(10)})
  with pytest.raises(TypeError):
    P.DirichletPartitioner(3, 'label', 0.5)  # Flower's positional order is refused, not misread.


def _flower_pathological_deterministic(labels, m, k):
  classes = sorted(set(labels.tolist()))
  assigned = {c: [classes[(c + i) % len(classes)] for i in range(k)] for c in range(m)}
  used = {cl: sum(cl in a for a in assigned.values()) for cl in classes}
  parts = {c: [] for c in range(m)}
  for cl in classes:
    if not used[cl]:
      continue
    pieces = np.array_split(np.where(labels == cl)[0], used[cl])
    j = 0
    for c in range(m):
      if cl in assigned[c]:
        parts[c].extend(pieces[j].tolist())
        j += 1
  return [sorted(parts[c]) for c in range(m)]


def test_pathological_deterministic_matches_flower():
  labels = _labels(1000, 6, seed=1)
  part = P.PathologicalPartitioner(9, num_classes_per_partition=3, class_assignment_mode=
                                   'deterministic')(labels)
  assert _sets(part) == _flower_pathological_deterministic(labels, 9, 3)


@pytest.mark.parametrize('mode', ['random', 'first-deterministic'])
def test_pathological_each_client_has_k_classes(mode):
  labels = _labels(5000, 10, seed=3)
  part = P.PathologicalPartitioner(
      50, num_classes_per_partition=2, class_assignment_mode=mode, seed=0
  )(labels)
  hist = P.label_histogram(part, labels).counts
  assert np.all((hist > 0).sum(axis=1) == 2)
  assert np.all(np.bincount(part.indices, minlength=5000) <= 1)
  if mode == 'first-deterministic':
    assert np.all(hist[np.arange(50), np.arange(50) % 10] > 0)
  again = P.PathologicalPartitioner(
      50, num_classes_per_partition=2, class_assignment_mode=mode, seed=0
  )(labels)
  np.testing.assert_array_equal(part.indices, again.indices)


def test_pathological_errors_and_unused_classes():
  labels = _labels(100, 5, seed=0)
  with pytest.raises(ValueError, match='num_classes_per_partition=6 is more than the 5 classes'):
    P.PathologicalPartitioner(3, num_classes_per_partition=6)(labels)
  with pytest.raises(ValueError, match='has only 1 examples'):
    P.PathologicalPartitioner(
        3, num_classes_per_partition=1, class_assignment_mode='deterministic'
    )(np.array([0, 1, 1, 1]))
  with pytest.warns(UserWarning, match=r'classes \[2, 3, 4\]'):
    P.PathologicalPartitioner(
        2, num_classes_per_partition=1, class_assignment_mode='deterministic'
    )(labels)
  with pytest.raises(ValueError, match='class_assignment_mode'):
    P.PathologicalPartitioner(2, num_classes_per_partition=1, class_assignment_mode='x')


def _flower_shards(labels, m, per, size, keep, seed):
  """Flower's ShardPartitioner for num_shards_per_partition given (shard_size optional)."""
  rng = np.random.default_rng(seed)
  order = np.argsort(labels, kind='stable')
  n = len(labels)
  if size is None:
    size = int(n / (m * per))
    usable = int(np.ceil(n / size)) if keep else n // size
  else:
    usable = n // size
  shard_ids = rng.permutation(usable)[: m * per]
  parts = []
  for c in range(m):
    idx = []
    for s in shard_ids[c * per : (c + 1) * per]:
      idx.extend(order[s * size : min((s + 1) * size, n)].tolist())
    parts.append(sorted(idx))
  return parts


@pytest.mark.parametrize('size, keep', [(None, False), (None, True), (13, False)])
def test_shards_match_flower(size, keep):
  labels = _labels(1003, 10, seed=6)
  part = P.ShardPartitioner(
      20, num_shards_per_partition=2, shard_size=size, keep_incomplete_shard=keep, seed=5
  )(labels)
  assert _sets(part) == _flower_shards(labels, 20, 2, size, keep, seed=5)


def test_shards_by_size_only_use_every_shard():
  labels = _labels(1000, 10, seed=6)
  part = P.ShardPartitioner(7, shard_size=100)(labels)
  assert sorted(part.sizes.tolist()) == [100] * 4 + [200] * 3
  assert np.all(np.bincount(part.indices, minlength=1000) == 1)
  with pytest.raises(ValueError, match='only 10 shards'):
    P.ShardPartitioner(11, shard_size=100)(labels)
  with pytest.raises(ValueError, match='need 1200 examples'):
    P.ShardPartitioner(6, num_shards_per_partition=2, shard_size=100)(labels)
  with pytest.raises(ValueError, match='num_shards_per_partition, shard_size, or both'):
    P.ShardPartitioner(6)
