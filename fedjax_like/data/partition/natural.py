"""Natural-id partitions: one client per distinct value of a column (a user, a speaker, a writer).

:class:`NaturalIdPartitioner` follows Flower Datasets' partitioner of that name: client ``c`` is
the ``c``-th distinct value of ``partition_by`` in sorted order and holds every example with that
value, in index order. The client ids are the values themselves as strings (bytes decoded as
UTF-8), so a federated dataset keeps the ids its users know. Vectorized: one factorization of the
column (a dict pass for Python strings, counting for integers) and one stable sort.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fedjax_like.data.partition import base


def _id_string(value) -> str:
  if isinstance(value, (bytes, np.bytes_)):
    return bytes(value).decode('utf-8', errors='backslashreplace')
  return str(value)


@dataclasses.dataclass(frozen=True)
class NaturalIdPartitioner:
  """One client per distinct value of ``partition_by``.

  Args:
    partition_by: the column holding each example's natural id (e.g. ``'user'``).
  """

  partition_by: str

  def __call__(self, table: base.Table) -> base.Partition:
    who = 'NaturalIdPartitioner'
    values = base.column(table, self.partition_by, who)
    if len(values) == 0:
      raise ValueError(f'{who}: the data has no examples.')
    natural_ids, codes = base.encode_labels(values)
    client_ids = [_id_string(v) for v in natural_ids.tolist()]
    if len(set(client_ids)) != len(client_ids):
      raise ValueError(
          f'{who}: distinct values of {self.partition_by!r} print as the same client id '
          '(e.g. 1 and "1"); make the column one type.'
      )
    return base.Partition.from_assignment(codes, len(client_ids), client_ids=client_ids)
