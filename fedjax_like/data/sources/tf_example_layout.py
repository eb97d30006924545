"""Records that share one byte layout, decoded as a 2-D array: the first stage of batch decoding.

Files written by one program usually hold Examples whose bytes differ only inside the values: the
same features in the same order, the same keys, the same list lengths (EMNIST's 784 floats and
one-byte label, CIFAR's pixels). :func:`decode_same_layout` reads the layout of the first record
(one pass of the wire format in Python, accepting only TensorFlow's encoding: one ``features``
field, entries of a key then a value, one list per feature, numeric lists packed), then checks
every record of the same length against it with a single comparison of the layout bytes (tags,
lengths, keys) over a ``[records, length]`` array. Matching records are decoded by column slices:
floats as bytes, packed int64 lists by a vectorized varint decode (each run checked: complete
varints, the same count as the first record), bytes values as ``bytes``. The values are then those
of the per-example decoder (the layout bytes it reads are the first record's, which it accepted,
and each int64 run it walks is checked the same way). Records that do not match are left to the
caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from fedjax_like.data.sources import tf_example
from fedjax_like.data.sources.tf_example import FixedLenFeature


class _Region(NamedTuple):
  """A value payload ``[a, b)`` of the first record: ``kind`` 1 bytes, 2 float, 3 int64."""

  feature: str
  kind: int
  a: int
  b: int


def _layout(blob: bytes) -> list[_Region] | None:
  """The value regions of ``blob`` in TF's encoding, or None for any other (or malformed) one."""
  try:
    fields = list(tf_example._fields(blob, 0, len(blob)))
    if [(f, w) for f, w, _, _ in fields] != [(1, 2)]:
      return None
    regions: list[_Region] = []
    seen = set()
    for field, wire, a, b in tf_example._fields(blob, fields[0][2], fields[0][3]):
      if (field, wire) != (1, 2):
        return None
      entry = list(tf_example._fields(blob, a, b))
      if [(f, w) for f, w, _, _ in entry] != [(1, 2), (2, 2)]:
        return None
      name = blob[entry[0][2] : entry[0][3]].decode('utf-8')
      if name in seen:
        return None
      seen.add(name)
      feature = list(tf_example._fields(blob, entry[1][2], entry[1][3]))
      if len(feature) != 1 or feature[0][0] not in (1, 2, 3) or feature[0][1] != 2:
        return None
      kind, la, lb = feature[0][0], feature[0][2], feature[0][3]
      items = list(tf_example._fields(blob, la, lb))
      if any((f, w) != (1, 2) for f, w, _, _ in items) or (kind != 1 and len(items) > 1):
        return None
      regions += [_Region(name, kind, ia, ib) for _, _, ia, ib in items]
    return regions
  except (tf_example.ProtoDecodeError, UnicodeDecodeError):
    return None


def _varint_runs(rows: np.ndarray, region: _Region) -> tuple[np.ndarray, np.ndarray]:
  """Per row: whether ``rows[:, a:b]`` is complete varints of at most 10 bytes, and how many."""
  span = rows[:, region.a : region.b]
  if not span.shape[1]:
    return np.ones(len(rows), dtype=bool), np.zeros(len(rows), dtype=np.int64)
  ends = span < 0x80
  count = ends.sum(axis=1)
  ok = ends[:, -1].copy()
  if span.shape[1] - int(count.min(initial=0)) >= 10:  # Room for a 10-byte continuation run.
    more = np.cumsum(~ends, axis=1)
    run = more - np.maximum.accumulate(np.where(ends, more, 0), axis=1)
    ok &= (run < 10).all(axis=1)
  return ok, count


def decode_same_layout(
    blobs: Sequence[bytes], joined: bytes, starts: np.ndarray,
    spec: Mapping[str, FixedLenFeature],
) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
  """Decodes the records that share the first record's layout.

  Args:
    blobs: the records; ``joined`` their concatenation, record ``i`` at ``starts[i]``.
    spec: as :func:`.tf_example.parse_examples`.

  Returns:
    ``(decoded, arrays)``: a bool ``[n]`` of the records decoded and the spec's arrays ``[n,
    ...]`` filled at those rows (other rows unset); None when the first record's layout is not
    TF's or does not fit ``spec``.
  """
  regions = _layout(bytes(blobs[0]))
  if regions is None:
    return None
  by_feature = {}
  for region in regions:
    by_feature.setdefault(region.feature, []).append(region)
  for name, feature in spec.items():
    kind, _ = tf_example._SPEC_KINDS[feature.dtype]
    want = {'bytes_list': 1, 'float_list': 2, 'int64_list': 3}[kind]
    mine = by_feature.get(name, [])
    count = int(np.prod(feature.shape, dtype=np.int64))
    if any(r.kind != want for r in mine) or (want == 1 and len(mine) != count) or (
        want == 2 and sum(r.b - r.a for r in mine) != 4 * count):
      return None  # The first record does not fit: the caller's path gives the error.
  n = len(blobs)
  width = len(blobs[0])
  lengths = np.fromiter(map(len, blobs), dtype=np.int64, count=n)
  same = np.flatnonzero(lengths == width)
  buf = np.frombuffer(joined, dtype=np.uint8)
  if len(same) == n:  # All one length: the records are the rows of one array.
    rows = buf[: n * width].reshape(n, width)
  else:
    rows = np.lib.stride_tricks.sliding_window_view(buf, width)[starts[same]]
  layout = np.ones(width, dtype=bool)
  for region in regions:
    layout[region.a : region.b] = False
  columns = np.flatnonzero(layout)
  match = np.all(rows[:, columns] == rows[0, columns], axis=1)
  first_counts = {}
  for region in regions:
    if region.kind == 3:
      ok, count = _varint_runs(rows, region)
      match &= ok & (count == count[0])
      first_counts[region] = int(count[0])
  if not match[0]:
    return None
  rows, kept = rows[match], same[match]
  out = {}
  for name, feature in spec.items():
    kind, dtype = tf_example._SPEC_KINDS[feature.dtype]
    count = int(np.prod(feature.shape, dtype=np.int64))
    array = np.empty((n, *feature.shape), dtype=dtype)
    flat = array.reshape(n, count)
    mine = by_feature.get(name, [])
    if kind == 'float_list':
      if count:
        raw = np.ascontiguousarray(rows[:, mine[0].a : mine[0].b])
        flat[kept] = raw.view('<f4').astype(np.float32, copy=False)
    elif kind == 'int64_list':
      if (first_counts[mine[0]] if mine else 0) != count:
        return None
      if count:
        flat[kept] = _decode_fixed_varints(rows[:, mine[0].a : mine[0].b], count)
    else:
      for j, region in enumerate(mine):
        for r, start in zip(kept.tolist(), starts[kept].tolist(), strict=True):
          flat[r, j] = joined[start + region.a : start + region.b]
    out[name] = array
  decoded = np.zeros(n, dtype=bool)
  decoded[kept] = True
  return decoded, out


def _decode_fixed_varints(span: np.ndarray, count: int) -> np.ndarray:
  """``count`` complete varints per row of ``span`` (checked by the caller) -> int64 ``[rows,
  count]``."""
  flat = span.reshape(-1)
  ends = np.flatnonzero(flat < 0x80)
  starts = np.concatenate(([0], ends[:-1] + 1))
  place = np.arange(len(flat)) - np.repeat(starts, ends - starts + 1)
  bits = (flat & 0x7F).astype(np.uint64) << (np.uint64(7) * place.astype(np.uint64))
  return np.add.reduceat(bits, starts).view(np.int64).reshape(len(span), count)
