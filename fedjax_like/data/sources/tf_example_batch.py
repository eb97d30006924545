"""Vectorized ``tf.train.Example`` decoding: many records at once, with NumPy.

:func:`parse_examples` has the contract of :func:`.tf_example.parse_examples` (the same spec, the
same arrays, the same errors) and gives bit-identical results. Records that share the first
record's byte layout are decoded as one 2-D array (:mod:`.tf_example_layout`: EMNIST- or
CIFAR-like files, where only the values differ). The others are walked together: each level of
the message tree (``Example``, ``Features``, map entries, ``Feature``, the value lists) is one
loop over *field positions* whose body is NumPy over every record, so the Python work grows with
the number of fields in a message, not with the number of records. Values are then gathered per
feature: float lists as byte copies, packed int64 lists by a vectorized varint decode, bytes lists
as ``bytes`` objects.

The walk takes the encoding TensorFlow writes (packed numeric lists, one map entry per key, one
list per feature). A record that is encoded any other legal way (unpacked values, a key seen
twice, several lists in one feature, a non-ASCII feature name), that does not fit the spec, or that
is malformed anywhere the per-example decoder looks, is decoded by the per-example decoder instead,
so it gets that decoder's values or its error, naming the record. Fewer than :data:`SMALL_BATCH`
records left after the layout stage go to the per-example decoder whole (the walk's fixed cost is
a few hundred NumPy calls).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from fedjax_like.data.sources import tf_example, tf_example_layout
from fedjax_like.data.sources.tf_example import FixedLenFeature

# Fewer records than this are decoded one by one (same results; less fixed cost).
SMALL_BATCH = 48
_PAD = 16  # Zero bytes after the joined records, so a 10-byte varint window never runs off.
_SPAN10 = np.arange(10, dtype=np.int64)
_SHIFTS = (7 * _SPAN10).astype(np.uint64)
_KIND_FIELD = {'bytes_list': 1, 'float_list': 2, 'int64_list': 3}


def _varints(buf: np.ndarray, pos: np.ndarray, end: np.ndarray):
  """Varints at ``pos`` (each within ``end``): ``(value uint64, length, ok)``."""
  first = buf[pos]
  value = first.astype(np.uint64)
  length = np.ones(len(pos), dtype=np.int64)
  ok = np.ones(len(pos), dtype=bool)
  multi = np.flatnonzero(first >= 0x80)  # Most varints here (tags, short lengths) are one byte.
  if len(multi):
    window = buf[pos[multi, None] + _SPAN10]
    more = window >= 0x80
    stop = np.argmin(more, axis=1)
    ok[multi] = ~more[np.arange(len(multi)), stop]
    length[multi] = stop + 1
    bits = (window & 0x7F).astype(np.uint64) << _SHIFTS
    value[multi] = np.where(_SPAN10 <= stop[:, None], bits, np.uint64(0)).sum(
        axis=1, dtype=np.uint64)
  ok &= pos + length <= end
  return value, length, ok


class _Fields:
  """Every field of many messages: ``owner`` (the message's item), ``field``, ``wire``, and the
  payload ``[a, b)`` (for wire 0, ``a`` is unused and ``value`` holds the varint)."""

  def __init__(self, owner, field, wire, a, b, value):
    self.owner, self.field, self.wire, self.a, self.b, self.value = owner, field, wire, a, b, value

  def select(self, keep: np.ndarray) -> _Fields:
    return _Fields(self.owner[keep], self.field[keep], self.wire[keep], self.a[keep],
                   self.b[keep], self.value[keep])


def _walk(buf, owner, pos, end, bad: np.ndarray) -> _Fields:
  """The fields of the messages ``buf[pos:end]`` (one per item of ``owner``), in order within
  each message. Malformed messages mark ``bad[record]`` and yield no further fields."""
  parts = []
  live = pos < end
  item = np.flatnonzero(live)
  owner, pos, end = owner[live], pos[live], end[live]
  while len(pos):
    key, key_len, ok = _varints(buf, pos, end)
    field = (key >> np.uint64(3)).astype(np.int64)
    wire = (key & np.uint64(7)).astype(np.int64)
    ok &= (field != 0) & ((wire <= 2) | (wire == 5))
    start = pos + key_len
    a = start.copy()
    b = start.copy()
    value = np.zeros(len(pos), dtype=np.uint64)
    w0, w2 = wire == 0, wire == 2
    if w0.any():
      v, n, ok0 = _varints(buf, start[w0], end[w0])
      value[w0], b[w0] = v, start[w0] + n
      ok[w0] &= ok0
    if w2.any():
      size, n, ok2 = _varints(buf, start[w2], end[w2])
      a[w2] = start[w2] + n
      b[w2] = a[w2] + np.minimum(size, np.uint64(1 << 40)).astype(np.int64)
      ok[w2] &= ok2
    b[wire == 1] += 8
    b[wire == 5] += 4
    ok &= b <= end
    bad[owner[~ok]] = True
    parts.append((item[ok], owner[ok], field[ok], wire[ok], a[ok], b[ok], value[ok]))
    go = ok & (b < end)
    item, owner, pos, end = item[go], owner[go], b[go], end[go]
  if not parts:
    empty = np.zeros(0, dtype=np.int64)
    return _Fields(empty, empty, empty, empty, empty, np.zeros(0, dtype=np.uint64))
  cols = [np.concatenate(c) for c in zip(*parts, strict=True)]
  # The loop emits one field of every message per pass; a stable sort by message puts each
  # message's fields together, in their order.
  order = np.argsort(cols[0], kind='stable')
  return _Fields(*(c[order] for c in cols[1:]))


def _first_per_group(group: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
  """``(count, index of the first member)`` of each group ``0..size-1`` (groups sorted)."""
  count = np.bincount(group, minlength=size)
  first = np.full(size, -1, dtype=np.int64)
  starts = _group_starts(group)
  first[group[starts]] = starts
  return count, first


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
  """Where each run of equal keys begins."""
  if not len(sorted_keys):
    return np.zeros(0, dtype=np.int64)
  return np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))


def _single(fields: _Fields, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(count, a, b)`` per message ``0..size-1``: how many of ``fields`` it has, and the payload
  span of its first (zeros where it has none)."""
  count, first = _first_per_group(fields.owner, size)
  a = np.zeros(size, dtype=np.int64)
  b = np.zeros(size, dtype=np.int64)
  has = first >= 0
  a[has], b[has] = fields.a[first[has]], fields.b[first[has]]
  return count, a, b


def _packed_varints_ok(buf: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Whether each ``buf[a:b]`` is a run of complete varints of at most 10 bytes."""
  lengths = b - a
  ok = np.ones(len(a), dtype=bool)
  nonempty = lengths > 0
  ok[nonempty] = buf[b[nonempty] - 1] < 0x80
  index = _spans_index(a, lengths)
  if len(index):
    more = (buf[index] >= 0x80).astype(np.int64)
    # Length of each run of continuation bytes: a reset at every terminator.
    run = np.cumsum(more)
    reset = np.maximum.accumulate(np.where(more == 0, run, 0))
    long_run = (run - reset) >= 10
    owner = np.repeat(np.arange(len(a)), lengths)
    ok[np.unique(owner[long_run])] = False
  return ok


def _spans_index(a: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """The concatenated indices ``a[i] .. a[i] + lengths[i] - 1`` of every span."""
  total = int(lengths.sum())
  if not total:
    return np.zeros(0, dtype=np.int64)
  offsets = np.cumsum(lengths) - lengths
  return np.repeat(a - offsets, lengths) + np.arange(total, dtype=np.int64)


def _decode_varints(buf: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The packed varints of each valid span: ``(int64 values concatenated, count per span)``."""
  lengths = b - a
  index = _spans_index(a, lengths)
  data = buf[index]
  ends = np.flatnonzero(data < 0x80)
  if not len(ends):
    return np.zeros(0, dtype=np.int64), np.zeros(len(a), dtype=np.int64)
  starts = np.concatenate(([0], ends[:-1] + 1))
  place = np.arange(len(data)) - np.repeat(starts, ends - starts + 1)
  bits = (data & 0x7F).astype(np.uint64) << (np.uint64(7) * place.astype(np.uint64))
  values = np.add.reduceat(bits, starts)
  owner = np.repeat(np.arange(len(a)), lengths)
  counts = np.bincount(owner[ends], minlength=len(a))
  return values.view(np.int64), counts


def parse_examples(
    serialized: Sequence[bytes],
    spec: Mapping[str, FixedLenFeature],
    where: Callable[[int], str] | None = None,
) -> dict[str, np.ndarray]:
  """Decodes serialized Examples under a fixed-length spec, all records at once.

  Records that share the first record's byte layout are decoded as one 2-D array
  (:mod:`.tf_example_layout`); the others are walked together, or decoded one by one when fewer
  than :data:`SMALL_BATCH`.

  Args, returns and raises: as :func:`.tf_example.parse_examples` (whose results this matches
  bit for bit).
  """
  tf_example._check_spec(spec)
  n = len(serialized)
  if n == 0:
    return tf_example.parse_examples([], spec)
  blobs = [bytes(s) for s in serialized]
  lengths = np.fromiter(map(len, blobs), dtype=np.int64, count=n)
  joined = b''.join([*blobs, bytes(_PAD)])  # One copy; the padding keeps varint windows inside.
  starts = np.cumsum(lengths) - lengths
  same = tf_example_layout.decode_same_layout(blobs, joined, starts, spec)
  if same is not None and same[0].all():
    return same[1]
  rest = np.flatnonzero(~same[0]) if same is not None else np.arange(n)
  label = where if where is not None else (lambda i: f'example {i}')
  place = lambda j: label(int(rest[j]))  # noqa: E731
  part = [blobs[i] for i in rest.tolist()]
  if len(rest) < SMALL_BATCH:
    decoded = tf_example.parse_examples(part, spec, place)
  else:
    decoded = _walk_decode(part, spec, place)
  if same is None:
    return decoded
  out = same[1]
  for name in spec:
    out[name][rest] = decoded[name]
  return out


def _walk_decode(blobs: list[bytes], spec, where) -> dict[str, np.ndarray]:
  """The wire-format walk over all ``blobs`` (``where`` names each in errors)."""
  n = len(blobs)
  lengths = np.fromiter(map(len, blobs), dtype=np.int64, count=n)
  joined = b''.join([*blobs, bytes(_PAD)])
  buf = np.frombuffer(joined, dtype=np.uint8)
  starts = np.cumsum(lengths) - lengths
  bad = np.zeros(n, dtype=bool)
  records = np.arange(n, dtype=np.int64)

  # Example{features = 1} -> Features{feature = 1 (map entries)} -> entry{key = 1, value = 2}.
  ex = _walk(buf, records, starts, starts + lengths, bad)
  bad[ex.owner[(ex.field == 1) & (ex.wire != 2)]] = True
  ex = ex.select((ex.field == 1) & (ex.wire == 2))
  feats = _walk(buf, ex.owner, ex.a, ex.b, bad)
  bad[feats.owner[(feats.field == 1) & (feats.wire != 2)]] = True
  entries = feats.select((feats.field == 1) & (feats.wire == 2))
  num_entries = len(entries.owner)
  entry_record = entries.owner
  entry_bad = np.zeros(num_entries, dtype=bool)  # Such an entry sends its record back.
  parts = _walk(buf, np.arange(num_entries), entries.a, entries.b, entry_bad)
  key_count, key_a, key_b = _single(parts.select((parts.field == 1) & (parts.wire == 2)),
                                    num_entries)
  value_count, feature_a, feature_b = _single(
      parts.select((parts.field == 2) & (parts.wire == 2)), num_entries)
  entry_bad |= (key_count > 1) | (value_count > 1)
  key_index = _spans_index(key_a, key_b - key_a)
  if len(key_index):
    owner = np.repeat(np.arange(num_entries), key_b - key_a)
    entry_bad[owner[buf[key_index] >= 0x80]] = True  # Non-ASCII names: checked as UTF-8 there.

  # Feature{oneof: bytes_list = 1, float_list = 2, int64_list = 3} of every entry with a value.
  feature_fields = _walk(buf, np.arange(num_entries), feature_a, feature_b, entry_bad)
  is_list = (feature_fields.field >= 1) & (feature_fields.field <= 3)
  entry_bad[feature_fields.owner[is_list & (feature_fields.wire != 2)]] = True
  list_count, list_a, list_b = _single(feature_fields.select(is_list & (feature_fields.wire == 2)),
                                       num_entries)
  entry_bad |= list_count > 1
  kind = np.zeros(num_entries, dtype=np.int64)  # 0: no kind set.
  lists = feature_fields.select(is_list & (feature_fields.wire == 2))
  _, first = _first_per_group(lists.owner, num_entries)
  kind[list_count == 1] = lists.field[first[list_count == 1]]
  items = _walk(buf, np.arange(num_entries), list_a, list_b, entry_bad)
  items = items.select(items.field == 1)
  item_kind = kind[items.owner]
  item_bad = (item_kind == 1) & (items.wire != 2)  # What the per-example decoder rejects.
  item_bad |= (item_kind == 2) & (items.wire != 2) & (items.wire != 5)
  item_bad |= (item_kind == 3) & (items.wire != 0) & (items.wire != 2)
  item_bad |= (item_kind == 2) & (items.wire == 2) & ((items.b - items.a) % 4 != 0)
  packed_int = (item_kind == 3) & (items.wire == 2)
  item_bad[packed_int] |= ~_packed_varints_ok(buf, items.a[packed_int], items.b[packed_int])
  entry_bad[items.owner[item_bad]] = True
  # Numeric lists in the fast path: one packed run (or nothing).
  numeric = item_kind >= 2
  run_count = np.bincount(items.owner[numeric], minlength=num_entries)
  unpacked = numeric & (items.wire != 2)
  entry_bad[items.owner[unpacked]] = True
  entry_bad |= run_count > 1
  bad[entry_record[entry_bad]] = True

  out = {}
  for name, feature in spec.items():
    out[name] = _gather(buf, joined, name, feature, n, entry_record, key_a, key_b, kind, items,
                        bad)
  for i in np.flatnonzero(bad).tolist():
    row = tf_example.parse_examples([blobs[i]], spec, where=lambda _, i=i: where(i))
    for name in spec:
      out[name][i] = row[name][0]
  return out


def _gather(buf, joined, name, feature, n, entry_record, key_a, key_b, kind, items,
            bad) -> np.ndarray:
  """One spec feature's values for the records the fast path keeps; marks the others ``bad``."""
  spec_kind, dtype = tf_example._SPEC_KINDS[feature.dtype]
  count = int(np.prod(feature.shape, dtype=np.int64))
  out = np.empty((n, *feature.shape), dtype=dtype)  # Every row is filled here or one by one.
  flat = out.reshape(n, count)
  key = np.frombuffer(name.encode('utf-8'), dtype=np.uint8)
  matches = np.flatnonzero(key_b - key_a == len(key))
  if len(key) and len(matches):
    window = buf[key_a[matches][:, None] + np.arange(len(key))]
    matches = matches[np.all(window == key, axis=1)]
  records = entry_record[matches]
  bad |= np.bincount(records, minlength=n) != 1  # Missing, or named twice: decoded one by one.
  bad[records[kind[matches] != _KIND_FIELD[spec_kind]]] = True
  keep = ~bad[records]
  matches, records = matches[keep], records[keep]
  matched = np.zeros(len(kind), dtype=bool)
  matched[matches] = True
  mine = items.select(matched[items.owner])  # Sorted by entry, so by record.
  if spec_kind == 'bytes_list':
    per_entry = np.bincount(mine.owner, minlength=len(kind))
    bad[records[per_entry[matches] != count]] = True
    mine = mine.select(~bad[entry_record[mine.owner]])
    rows = entry_record[mine.owner]
    group_start = _group_starts(rows)
    slot = np.arange(len(rows)) - np.repeat(group_start, np.diff(np.append(group_start, len(rows))))
    for r, j, a, b in zip(rows.tolist(), slot.tolist(), mine.a.tolist(), mine.b.tolist(),
                          strict=True):
      flat[r, j] = joined[a:b]
    return out
  # A numeric list here is one packed run (entries with more were sent back) or empty.
  span_a = np.zeros(len(kind), dtype=np.int64)
  span_b = np.zeros(len(kind), dtype=np.int64)
  span_a[mine.owner], span_b[mine.owner] = mine.a, mine.b
  a, b = span_a[matches], span_b[matches]
  if spec_kind == 'float_list':
    width = 4 * count
    bad[records[(b - a) != width]] = True
    keep = ~bad[records]
    rows, a = records[keep], a[keep]
    if width and len(rows):
      step = int(a[1] - a[0]) if len(a) > 1 else width
      if len(rows) == n and step >= width and np.all(np.diff(a) == step):
        # Records of one length and layout (TF's usual): the values form a strided 2-D view.
        view = np.lib.stride_tricks.as_strided(buf[a[0] :], (n, width), (step, 1))
        flat.view(np.uint8)[:] = view
      else:  # One gather through a sliding-window view: row i is buf[a_i : a_i + width].
        windows = np.lib.stride_tricks.sliding_window_view(buf, width)
        flat.view(np.uint8)[rows] = windows[a]
    if not np.little_endian:  # The wire holds little-endian floats.
      flat.byteswap(inplace=True)
    return out
  values, counts = _decode_varints(buf, a, b)
  bad[records[counts != count]] = True
  keep = ~bad[records]
  if count:
    offsets = np.cumsum(counts) - counts
    flat[records[keep]] = values[_spans_index(offsets[keep], counts[keep])].reshape(-1, count)
  return out
