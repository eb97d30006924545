"""Partitioners: centralized data split into clients, seeded and vectorized.

Each partitioner is a frozen dataclass configured up front (names and arguments as Flower
Datasets') and called on the centralized data, ``partitioner(table) -> Partition``, where
``table`` is ``{column: array[num_examples, ...]}`` or the one column it reads. The same seed
gives the same partition. A :class:`Partition` holds every client's example indices in two flat
arrays and serves them as a :class:`~fedjax_like.data.ClientData` (``partition.client_data(
arrays)``) or as index arrays (``partition.index_lists()``)::

    table = {'image': images, 'label': labels}
    part = fl.data.partition.DirichletPartitioner(100, alpha=0.3, min_partition_size=10)(table)
    train = part.client_data(table)
    fl.data.partition.plot_label_distributions(part, labels, 'labels.png')

* IID and size skew (:mod:`.sizes`): :class:`IidPartitioner`, :class:`SizePartitioner`,
  :class:`LinearPartitioner`, :class:`SquarePartitioner`, :class:`ExponentialPartitioner`.
* Label skew (:mod:`.labels`): :class:`DirichletPartitioner` (minimum client size, retries),
  :class:`PathologicalPartitioner` (k classes per client), :class:`ShardPartitioner`.
* Natural ids (:mod:`.natural`): :class:`NaturalIdPartitioner` (one client per user).
* :func:`label_histogram` and :func:`plot_label_distributions` (:mod:`.histogram`).
"""

from fedjax_like.data.partition.base import Partition, Partitioner
from fedjax_like.data.partition.histogram import (
    LabelHistogram,
    label_histogram,
    plot_label_distributions,
)
from fedjax_like.data.partition.labels import (
    DirichletPartitioner,
    PathologicalPartitioner,
    ShardPartitioner,
)
from fedjax_like.data.partition.natural import NaturalIdPartitioner
from fedjax_like.data.partition.sizes import (
    ExponentialPartitioner,
    IidPartitioner,
    LinearPartitioner,
    SizePartitioner,
    SquarePartitioner,
)

__all__ = [
    'DirichletPartitioner',
    'ExponentialPartitioner',
    'IidPartitioner',
    'LabelHistogram',
    'LinearPartitioner',
    'NaturalIdPartitioner',
    'Partition',
    'Partitioner',
    'PathologicalPartitioner',
    'ShardPartitioner',
    'SizePartitioner',
    'SquarePartitioner',
    'label_histogram',
    'plot_label_distributions',
]
