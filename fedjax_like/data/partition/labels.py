"""Label-skew partitioners: Dirichlet, pathological (k classes per client) and shards.

Each follows Flower Datasets' partitioner of the same name (``flwr_datasets.partitioner``, 0.6):
its arguments, defaults (``seed=42``, ``shuffle=True``) and algorithm, vectorized over examples
(one loop over classes, none over examples or clients). Labels are any 1-D column (ints, strings);
classes are its distinct values in sorted order. ``shuffle`` randomizes the order of examples
within each client, as Flower does after assignment.

* :class:`DirichletPartitioner` (Hsu et al. 2019, "Measuring the effects of non-identical data
  distribution"): for each class ``k`` draw ``p ~ Dir(alpha)`` over clients and cut class ``k``'s
  examples (in index order) at ``floor(cumsum(p) * n_k)``. With ``self_balancing`` a client
  already holding more than ``n / num_partitions`` examples gets no more (its ``p`` is zeroed and
  the rest renormalized). The whole draw is repeated until every client has at least
  ``min_partition_size`` examples; after ``max_tries`` failed draws (Flower: 10 retries, so 11
  draws) it is an error. Where Flower divides by zero (every client still open drew ``p = 0``,
  possible for tiny ``alpha``), the class is split evenly over the open clients: no NaN.
* :class:`PathologicalPartitioner` (Li et al. 2022, "Federated learning on non-IID data silos"):
  each client is given ``num_classes_per_partition`` classes, and each class's examples are split
  into near-equal consecutive parts among the clients given it (``np.array_split``). Classes no
  client was given are left out, with a warning.
* :class:`ShardPartitioner` (McMahan et al. 2017): examples sorted by label (stably) are cut into
  shards of ``shard_size`` consecutive examples and each client gets ``num_shards_per_partition``
  shards drawn at random, with Flower's rules for which of the two may be omitted.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np

from fedjax_like.data.partition import base


def _class_segments(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(classes, order, starts)``: examples sorted by class (stable), class ``k`` at
  ``order[starts[k]:starts[k + 1]]``."""
  classes, codes = base.encode_labels(labels)
  order = base.stable_order(codes, len(classes))
  starts = np.zeros(len(classes) + 1, dtype=np.int64)
  np.cumsum(np.bincount(codes, minlength=len(classes)), out=starts[1:])
  return classes, order, starts


@dataclasses.dataclass(frozen=True)
class DirichletPartitioner:
  """Label skew: each class spread over the clients by a Dirichlet draw.

  Args (all but ``num_partitions`` by keyword):
    num_partitions: the number of clients.
    alpha: the concentration, a positive scalar or one value per client; small is skewed, large
      approaches IID.
    partition_by: the label column.
    min_partition_size: every client must end with at least this many examples.
    self_balancing: stop giving examples to a client once it holds more than the average.
    shuffle: randomize the order of examples within each client.
    seed: the seed of the draws.
    max_tries: draws allowed beyond the first before giving up (Flower's fixed 10).
  """

  num_partitions: int
  _: dataclasses.KW_ONLY
  alpha: float | Sequence[float]
  partition_by: str = 'label'
  min_partition_size: int = 10
  self_balancing: bool = False
  shuffle: bool = True
  seed: int | None = 42
  max_tries: int = 10

  def __post_init__(self):
    base.check_count(self.num_partitions, 'num_partitions', 'DirichletPartitioner')
    base.check_count(self.min_partition_size, 'min_partition_size', 'DirichletPartitioner', 0)
    base.check_count(self.max_tries, 'max_tries', 'DirichletPartitioner', 0)
    alpha = np.asarray(self.alpha, dtype=np.float64)
    if alpha.ndim == 1 and len(alpha) != self.num_partitions:
      raise ValueError(
          f'DirichletPartitioner: alpha has {len(alpha)} values; give one per partition '
          f'({self.num_partitions}) or a scalar.'
      )
    if alpha.ndim > 1 or not np.all(np.isfinite(alpha)) or np.any(alpha <= 0):
      raise ValueError(f'DirichletPartitioner: alpha must be positive and finite; got {alpha}.')

  def __call__(self, table: base.Table) -> base.Partition:
    who = 'DirichletPartitioner'
    labels = base.column(table, self.partition_by, who)
    n, m = len(labels), self.num_partitions
    base.check_enough_examples(m, n, who)
    if self.min_partition_size * m > n:
      raise ValueError(
          f'{who}: min_partition_size={self.min_partition_size} for {m} partitions needs '
          f'{self.min_partition_size * m} examples; there are {n}. Lower min_partition_size.'
      )
    alpha = np.broadcast_to(np.asarray(self.alpha, dtype=np.float64), (m,))
    _, order, starts = _class_segments(labels)
    rng = np.random.default_rng(self.seed)
    average = n / m
    clients = np.arange(m, dtype=np.int64)
    for attempt in range(self.max_tries + 1):
      client_of = np.empty(n, dtype=np.int64)
      sizes = np.zeros(m, dtype=np.int64)
      for k in range(len(starts) - 1):
        n_k = int(starts[k + 1] - starts[k])
        p = rng.dirichlet(alpha)
        if self.self_balancing:
          open_ = sizes <= average
          p = np.where(open_, p, 0.0)
          total = np.cumsum(p)[-1]  # Summed in order, as Flower's sum(): the same cut points.
          p = p / total if total > 0 else open_ / np.count_nonzero(open_)
        cuts = (np.cumsum(p) * n_k).astype(np.int64)[:-1]
        counts = np.diff(np.concatenate(([0], np.minimum(cuts, n_k), [n_k])))
        client_of[order[starts[k] : starts[k + 1]]] = np.repeat(clients, counts)
        sizes += counts
      if sizes.min() >= self.min_partition_size:
        rng_shuffle = rng if self.shuffle else None
        return base.Partition.from_assignment(client_of, m, rng=rng_shuffle)
      if attempt < self.max_tries:
        warnings.warn(
            f'{who}: draw {attempt + 1} left a client with {int(sizes.min())} examples, fewer '
            f'than min_partition_size={self.min_partition_size}; drawing again.',
            stacklevel=2,
        )
    raise ValueError(
        f'{who}: after {self.max_tries + 1} draws some client still had fewer than '
        f'min_partition_size={self.min_partition_size} examples. Increase alpha, lower '
        'min_partition_size or num_partitions, or raise max_tries.'
    )


@dataclasses.dataclass(frozen=True)
class PathologicalPartitioner:
  """Each client holds exactly ``num_classes_per_partition`` classes.

  Args (all but ``num_partitions`` by keyword):
    num_partitions: the number of clients.
    num_classes_per_partition: classes per client (at most the number of classes).
    partition_by: the label column.
    class_assignment_mode: ``'random'`` (each client draws its classes without replacement),
      ``'deterministic'`` (client ``c`` gets classes ``(c + i) % K``, ``i < k``) or
      ``'first-deterministic'`` (the first class is ``c % K``, the rest random; the paper's).
    shuffle: randomize the order of examples within each client.
    seed: the seed of the class draws and the shuffle.
  """

  num_partitions: int
  _: dataclasses.KW_ONLY
  num_classes_per_partition: int
  partition_by: str = 'label'
  class_assignment_mode: Literal['random', 'deterministic', 'first-deterministic'] = 'random'
  shuffle: bool = True
  seed: int | None = 42

  def __post_init__(self):
    who = 'PathologicalPartitioner'
    base.check_count(self.num_partitions, 'num_partitions', who)
    base.check_count(self.num_classes_per_partition, 'num_classes_per_partition', who)
    modes = ('random', 'deterministic', 'first-deterministic')
    if self.class_assignment_mode not in modes:
      raise ValueError(
          f'{who}: class_assignment_mode must be one of {modes}; got '
          f'{self.class_assignment_mode!r}.'
      )

  def _assign_classes(self, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """int ``[num_partitions, k]``: each client's classes (indices into the sorted classes)."""
    m, k = self.num_partitions, self.num_classes_per_partition
    first = np.arange(m) % num_classes
    if self.class_assignment_mode == 'deterministic':
      return (first[:, None] + np.arange(k)[None, :]) % num_classes
    keys = rng.random((m, num_classes))
    if self.class_assignment_mode == 'first-deterministic':
      keys[np.arange(m), first] = -1.0  # Sorts first: the client's deterministic class.
    return np.argsort(keys, axis=1, kind='stable')[:, :k]

  def __call__(self, table: base.Table) -> base.Partition:
    who = 'PathologicalPartitioner'
    labels = base.column(table, self.partition_by, who)
    n, m, k = len(labels), self.num_partitions, self.num_classes_per_partition
    base.check_enough_examples(m, n, who)
    classes, order, starts = _class_segments(labels)
    if k > len(classes):
      raise ValueError(
          f'{who}: num_classes_per_partition={k} is more than the {len(classes)} classes in '
          f'{self.partition_by!r}.'
      )
    rng = np.random.default_rng(self.seed)
    assigned = self._assign_classes(len(classes), rng)
    # (class, client) pairs sorted by class, then client: the order each class is split in.
    pair_class = assigned.reshape(-1)
    pair_client = np.repeat(np.arange(m, dtype=np.int64), k)
    by_class = np.lexsort((pair_client, pair_class))
    pair_class, pair_client = pair_class[by_class], pair_client[by_class]
    users = np.bincount(pair_class, minlength=len(classes))
    class_sizes = np.diff(starts)
    short = np.flatnonzero(users > class_sizes)
    if len(short):
      c = short[0]
      raise ValueError(
          f'{who}: class {classes[c]!r} is given to {users[c]} clients but has only '
          f'{class_sizes[c]} examples. Use fewer partitions or classes per partition, or '
          "class_assignment_mode='deterministic'."
      )
    unused = classes[users == 0]
    if len(unused):
      warnings.warn(
          f'{who}: classes {unused.tolist()} were given to no client and are left out.',
          stacklevel=2,
      )
    # np.array_split of class c into u parts: the first n_c % u parts hold one extra example.
    rank = np.arange(len(pair_class)) - np.concatenate(([0], np.cumsum(users)))[pair_class]
    u, n_c = users[pair_class], class_sizes[pair_class]
    part_sizes = n_c // u + (rank < n_c % u)
    client_of = np.full(n, -1, dtype=np.int64)
    used = np.concatenate([order[starts[c] : starts[c + 1]] for c in np.flatnonzero(users)])
    client_of[used] = np.repeat(pair_client, part_sizes)
    return base.Partition.from_assignment(client_of, m, rng=rng if self.shuffle else None)


@dataclasses.dataclass(frozen=True)
class ShardPartitioner:
  """Label-sorted shards of consecutive examples, dealt to clients at random.

  Args (all but ``num_partitions`` by keyword):
    num_partitions: the number of clients.
    partition_by: the label column the examples are sorted by.
    num_shards_per_partition: shards per client; when omitted, every shard of ``shard_size`` is
      used and the first ``num_shards % num_partitions`` clients get one more.
    shard_size: examples per shard; when omitted, ``floor(n / (num_partitions *
      num_shards_per_partition))``.
    keep_incomplete_shard: keep the last, shorter shard (when ``shard_size`` is derived or
      ``num_shards_per_partition`` is omitted), as Flower.
    shuffle: randomize the order of examples within each client.
    seed: the seed of the shard draw and the shuffle.
  """

  num_partitions: int
  _: dataclasses.KW_ONLY
  partition_by: str = 'label'
  num_shards_per_partition: int | None = None
  shard_size: int | None = None
  keep_incomplete_shard: bool = False
  shuffle: bool = True
  seed: int | None = 42

  def __post_init__(self):
    who = 'ShardPartitioner'
    base.check_count(self.num_partitions, 'num_partitions', who)
    if self.num_shards_per_partition is not None:
      base.check_count(self.num_shards_per_partition, 'num_shards_per_partition', who)
    if self.shard_size is not None:
      base.check_count(self.shard_size, 'shard_size', who)
    if self.num_shards_per_partition is None and self.shard_size is None:
      raise ValueError(f'{who}: give num_shards_per_partition, shard_size, or both.')

  def _plan(self, n: int) -> tuple[int, int, np.ndarray]:
    """``(shard_size, usable_shards, shards per client)`` by Flower's rules."""
    who, m = 'ShardPartitioner', self.num_partitions
    size, per = self.shard_size, self.num_shards_per_partition
    if per is not None:
      if size is not None and size * per * m > n:
        raise ValueError(
            f'{who}: {m} partitions x {per} shards x {size} examples need {size * per * m} '
            f'examples; there are {n}.'
        )
      counts = np.full(m, per, dtype=np.int64)
      if size is None:
        size = n // (m * per)
        if size == 0:
          raise ValueError(f'{who}: {m} x {per} shards of {n} examples would be empty.')
        usable = math.ceil(n / size) if self.keep_incomplete_shard else n // size
      else:
        usable = n // size
    else:
      used = math.ceil(n / size) if self.keep_incomplete_shard else n // size
      usable = used
      counts = np.full(m, used // m, dtype=np.int64)
      counts[: used - (used // m) * m] += 1
    if usable < m:
      raise ValueError(
          f'{who}: only {usable} shards of {size} examples fit in {n} examples, fewer than the '
          f'{m} partitions. Use smaller shards or fewer partitions.'
      )
    return size, usable, counts

  def __call__(self, table: base.Table) -> base.Partition:
    who = 'ShardPartitioner'
    labels = base.column(table, self.partition_by, who)
    n, m = len(labels), self.num_partitions
    base.check_enough_examples(m, n, who)
    size, usable, counts = self._plan(n)
    _, order, _ = _class_segments(labels)
    rng = np.random.default_rng(self.seed)
    shards = rng.permutation(usable)[: int(counts.sum())]
    shard_client = np.full(usable, -1, dtype=np.int64)
    shard_client[shards] = np.repeat(np.arange(m, dtype=np.int64), counts)
    position_shard = np.arange(n) // size
    client_of = np.full(n, -1, dtype=np.int64)
    inside = position_shard < usable
    client_of[order[inside]] = shard_client[position_shard[inside]]
    return base.Partition.from_assignment(client_of, m, rng=rng if self.shuffle else None)
