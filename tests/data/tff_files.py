"""Builders of small files in TFF's exact formats, written independently of the code under test.

* :func:`encode_example`: a minimal protobuf encoder for ``tf.train.Example`` (cross-checked against
  the protobuf runtime in test_tf_example.py).
* :func:`write_sql_client_data`: TFF SqlClientData's schema (``sql_client_data_utils.py``), rows of
  different clients interleaved, ``client_metadata`` in another order than the ids sort.
"""

from __future__ import annotations

import sqlite3
import struct


def varint(n: int) -> bytes:
  n &= (1 << 64) - 1  # int64 is encoded as its 64-bit two's complement.
  out = bytearray()
  while True:
    low = n & 0x7F
    n >>= 7
    if n:
      out.append(low | 0x80)
    else:
      out.append(low)
      return bytes(out)


def tag(field: int, wire: int) -> bytes:
  return varint(field << 3 | wire)


def len_delim(field: int, payload: bytes) -> bytes:
  return tag(field, 2) + varint(len(payload)) + payload


def encode_example(features: dict, packed: bool = True) -> bytes:
  """``{name: ('float' | 'int64' | 'bytes', values)}`` -> serialized tf.train.Example."""
  entries = b''
  for name, (kind, values) in features.items():
    if kind == 'float':
      if packed:
        value_list = len_delim(1, struct.pack(f'<{len(values)}f', *values))
      else:
        value_list = b''.join(tag(1, 5) + struct.pack('<f', v) for v in values)
      feature = len_delim(2, value_list)
    elif kind == 'int64':
      if packed:
        value_list = len_delim(1, b''.join(varint(int(v)) for v in values))
      else:
        value_list = b''.join(tag(1, 0) + varint(int(v)) for v in values)
      feature = len_delim(3, value_list)
    else:
      feature = len_delim(1, b''.join(len_delim(1, v) for v in values))
    entry = len_delim(1, name.encode('utf-8')) + len_delim(2, feature)
    entries += len_delim(1, entry)  # Features.feature (map entry)
  return len_delim(1, entries)  # Example.features


def write_sql_client_data(path, rows: dict, with_index: bool = True) -> None:
  """``{split: {client_id: [serialized Example, ...]}}`` -> a SQLite file in TFF's schema.

  Rows are inserted round robin across clients (a client's rows are not contiguous), and
  ``client_metadata`` in reverse order, so neither reveals TFF's sorted id order by accident.
  """
  con = sqlite3.connect(path)
  with con:
    con.execute(
        'CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL, '
        'serialized_example_proto BLOB NOT NULL);'
    )
    con.execute(
        'CREATE TABLE client_metadata (client_id TEXT NOT NULL, split_name TEXT NOT NULL, '
        'num_examples INTEGER NOT NULL);'
    )
    if with_index:
      con.execute('CREATE INDEX idx_client_id_split ON examples (split_name, client_id);')
      con.execute('CREATE INDEX idx_metadata_client_id ON client_metadata (client_id);')
    streams = [(s, c, blobs) for s, clients in rows.items() for c, blobs in clients.items()]
    longest = max(len(blobs) for _, _, blobs in streams)
    for i in range(longest):
      for split, client, blobs in streams:
        if i < len(blobs):
          con.execute(
              'INSERT INTO examples (split_name, client_id, serialized_example_proto) '
              'VALUES (?, ?, ?);',
              (split, client, blobs[i]),
          )
    for split, client, blobs in reversed(streams):
      con.execute(
          'INSERT INTO client_metadata (client_id, split_name, num_examples) VALUES (?, ?, ?);',
          (client, split, len(blobs)),
      )
  con.close()
