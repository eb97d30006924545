"""Tests for the vectorized tf.train.Example decoder: bit-identical to the per-example decoder
(tf_example.parse_examples) on the same records, errors included, over TF's own encoding, every
other legal encoding, edge values and randomly damaged records."""

from __future__ import annotations

import numpy as np
import pytest
from tff_files import encode_example, len_delim, tag, varint

from fedjax_like.data.sources import tf_example
from fedjax_like.data.sources import tf_example_batch as batch
from fedjax_like.data.sources.tf_example import FixedLenFeature as F


@pytest.fixture(autouse=True, params=['layout', 'walk'])
def vectorize_every_batch(request, monkeypatch):
  """Small batches normally go to the per-example decoder; here they are vectorized, through the
  same-layout stage and the walk ('layout'), or the walk alone ('walk')."""
  monkeypatch.setattr(batch, 'SMALL_BATCH', 0)
  if request.param == 'walk':
    monkeypatch.setattr(batch.tf_example_layout, 'decode_same_layout', lambda *a: None)
  return request.param


def _outcome(fn, blobs, spec, where):
  try:
    return fn(blobs, spec, where), None
  except ValueError as e:
    return None, e


def assert_same(blobs, spec, where=None):
  """Both decoders give the same arrays (byte for byte) or the same error."""
  ref, ref_error = _outcome(tf_example.parse_examples, blobs, spec, where)
  got, got_error = _outcome(batch.parse_examples, blobs, spec, where)
  if ref_error is not None:
    assert got_error is not None, f'reference raised {ref_error!r}; the batch decoder did not'
    assert type(got_error) is type(ref_error) and str(got_error) == str(ref_error)
    return None
  assert got_error is None, f'batch decoder raised {got_error!r}; the reference did not'
  assert list(got) == list(ref)
  for name in ref:
    assert got[name].dtype == ref[name].dtype and got[name].shape == ref[name].shape, name
    if ref[name].dtype == object:
      assert got[name].tolist() == ref[name].tolist(), name
      assert all(type(v) is bytes for v in got[name].reshape(-1)), name
    else:
      assert got[name].tobytes() == ref[name].tobytes(), name  # NaN payloads and -0.0 too.
  return got


EMNIST = {'label': F((), 'int64'), 'pixels': F((28, 28), 'float32')}
STACKOVERFLOW = {
    'creation_date': F((), 'string'), 'score': F((), 'int64'), 'tags': F((), 'string'),
    'title': F((), 'string'), 'tokens': F((), 'string'), 'type': F((), 'string'),
}


def _emnist(rng, n):
  return [
      encode_example({'pixels': ('float', rng.random(784, dtype=np.float32).tolist()),
                      'label': ('int64', [int(rng.integers(0, 62))])})
      for _ in range(n)
  ]


def _stackoverflow(rng, n):
  words = [b'', b'a', b'numpy', b'\xc3\xa9t\xc3\xa9', b'x' * 300]
  return [
      encode_example({
          'creation_date': ('bytes', [b'2010-01-08 09:34:05+00:00']),
          'score': ('int64', [int(rng.integers(-(2**63), 2**63 - 1, dtype=np.int64))]),
          'tags': ('bytes', [b'|'.join(rng.choice(words, 3).tolist())]),
          'title': ('bytes', [rng.choice(words)]),
          'tokens': ('bytes', [b' '.join(rng.choice(words, int(rng.integers(0, 40))).tolist())]),
          'type': ('bytes', [b'question' if i % 2 else b'answer']),
      })
      for i in range(n)
  ]


def test_tf_encoding_emnist_and_stackoverflow():
  rng = np.random.default_rng(0)
  got = assert_same(_emnist(rng, 300), EMNIST)
  assert got['pixels'].shape == (300, 28, 28)
  assert_same(_stackoverflow(rng, 300), STACKOVERFLOW)
  assert_same([], EMNIST)


def test_edge_values_and_shapes():
  specials = [0.0, -0.0, float('inf'), float('-inf'), float('nan'), 1e-45, 3.4028234663852886e38]
  ints = [0, -1, 1, 2**63 - 1, -(2**63), 127, 128, -128, 300, -(2**31)]
  blobs = [
      encode_example({
          'f': ('float', specials), 'i': ('int64', ints), 'b': ('bytes', [b'', b'ab', b'\x00']),
          'empty_f': ('float', []), 'empty_i': ('int64', []), 'empty_b': ('bytes', []),
          'extra': ('int64', [5]),
      })
      for _ in range(3)
  ]
  quiet_nan = np.float32('nan').tobytes()
  assert quiet_nan in blobs[0]
  nan_payload = blobs[0].replace(quiet_nan, bytes([1]) + quiet_nan[1:])  # A NaN with a payload.
  spec = {
      'f': F((7,), 'float32'), 'i': F((2, 5), 'int64'), 'b': F((3,), 'string'),
      'empty_f': F((0,), 'float32'), 'empty_i': F((0,), 'int64'), 'empty_b': F((0,), 'string'),
  }
  got = assert_same(blobs + [nan_payload], spec)
  assert got['f'][3].tobytes() != got['f'][0].tobytes()
  assert_same(blobs, {})  # Nothing asked for: every record still checked.


def _entry(name: bytes, feature: bytes) -> bytes:
  return len_delim(1, len_delim(1, name) + len_delim(2, feature))


def _features(*entries: bytes) -> bytes:
  return len_delim(1, b''.join(entries))


def test_other_legal_encodings_go_through_the_reference():
  rng = np.random.default_rng(1)
  good = _emnist(rng, 4)
  unpacked = encode_example({'pixels': ('float', [0.5] * 784), 'label': ('int64', [3])},
                            packed=False)
  duplicate = good[0] + encode_example({'label': ('int64', [61])})  # Two `features`: merged.
  two_lists = _features(_entry(b'label', len_delim(2, len_delim(1, b'\0\0\0\0')) +
                               len_delim(3, len_delim(1, varint(9)))),
                        _entry(b'pixels', len_delim(2, len_delim(1, bytes(4 * 784)))))
  split_runs = _features(_entry(b'label', len_delim(3, len_delim(1, varint(1)))),
                         _entry(b'pixels', len_delim(2, len_delim(1, bytes(4 * 392)) +
                                                     len_delim(1, bytes(4 * 392)))))
  unknown = tag(9, 0) + varint(7) + good[1] + tag(15, 5) + b'abcd'
  key_value_swapped = _features(
      len_delim(1, len_delim(2, len_delim(3, len_delim(1, varint(4)))) + len_delim(1, b'label')),
      _entry(b'pixels', len_delim(2, len_delim(1, bytes(4 * 784)))))
  utf8_key = encode_example({'l\u00e9': ('int64', [1]), 'label': ('int64', [2]),
                             'pixels': ('float', [1.0] * 784)})
  blobs = [good[2], unpacked, duplicate, two_lists, split_runs, unknown, key_value_swapped,
           utf8_key, good[3]]
  got = assert_same(blobs, EMNIST)
  assert got['label'].tolist() == [got['label'][0], 3, 61, 9, 1, got['label'][5], 4, 2,
                                   got['label'][8]]
  assert_same([utf8_key], {'l\u00e9': F((), 'int64')})


@pytest.mark.parametrize(
    'bad',
    [
        encode_example({'pixels': ('float', [1.0] * 784)}),  # Missing label.
        encode_example({'pixels': ('float', [1.0] * 783), 'label': ('int64', [1])}),
        encode_example({'pixels': ('float', [1.0] * 784), 'label': ('float', [1.0])}),
        encode_example({'pixels': ('float', [1.0] * 784), 'label': ('int64', [1, 2])}),
        encode_example({'pixels': ('float', [1.0] * 784), 'label': ('bytes', [b'1'])}),
        _features(_entry(b'label', b''),  # A feature with no kind.
                  _entry(b'pixels', len_delim(2, len_delim(1, bytes(3136))))),
        b'',
        b'\x0a\x05\x0a',  # Overruns its message.
        b'\x0b',  # Group wire type.
        encode_example({'pixels': ('float', [1.0] * 784), 'label': ('int64', [1]),
                        'x': ('bytes', [b'a'])})[:-1],
        tag(1, 0) + varint(3),  # Example.features with the wrong wire type.
        _features(_entry(b'\xff\xfe', len_delim(3, len_delim(1, varint(1))))),  # Not UTF-8.
        _features(_entry(b'z', len_delim(2, len_delim(1, b'\0\0\0')))),  # Float run of 3 bytes.
        _features(_entry(b'z', len_delim(3, len_delim(1, b'\x80' * 10 + b'\x01')))),  # 11 bytes.
        _features(_entry(b'z', len_delim(3, len_delim(1, b'\x05\x80')))),  # Truncated varint.
        _features(_entry(b'z', len_delim(1, tag(1, 0) + varint(1)))),  # bytes value as varint.
        _features(_entry(b'z', tag(2, 0) + varint(1))),  # float_list as a varint.
    ],
)
def test_errors_are_the_reference_errors(bad):
  good = _emnist(np.random.default_rng(2), 3)
  assert_same([good[0], bad, good[1]], EMNIST, where=lambda i: f'file.db, row {i}')
  assert_same([good[2], bad], EMNIST)


def test_randomly_damaged_records_agree():
  rng = np.random.default_rng(3)
  records = _stackoverflow(rng, 40) + _emnist(rng, 10)
  spec_for = lambda i: STACKOVERFLOW if i < 40 else EMNIST  # noqa: E731
  for trial in range(100):
    i = int(rng.integers(0, len(records)))
    blob = bytearray(records[i])
    how = trial % 3
    if how == 0:
      blob = blob[: int(rng.integers(0, len(blob)))]
    elif how == 1:
      for _ in range(int(rng.integers(1, 4))):
        blob[int(rng.integers(0, len(blob)))] = int(rng.integers(0, 256))
    else:
      at = int(rng.integers(0, len(blob)))
      blob[at:at] = bytes(rng.integers(0, 256, int(rng.integers(1, 6)), dtype=np.uint8))
    same_kind = records[40:42] if i >= 40 else records[:2]
    assert_same([same_kind[0], bytes(blob), same_kind[1]], spec_for(i))


def test_tf_encoding_takes_the_fast_path(monkeypatch):
  calls = []
  reference = tf_example.parse_examples

  def counting(blobs, spec, where=None):
    calls.append(len(blobs))
    return reference(blobs, spec, where)

  monkeypatch.setattr(batch.tf_example, 'parse_examples', counting)
  rng = np.random.default_rng(4)
  batch.parse_examples(_emnist(rng, 50), EMNIST)
  batch.parse_examples(_stackoverflow(rng, 50), STACKOVERFLOW)
  assert calls == []  # No record needed the per-example decoder.
  unpacked = encode_example({'pixels': ('float', [0.5] * 784), 'label': ('int64', [3])},
                            packed=False)
  batch.parse_examples(_emnist(rng, 5) + [unpacked], EMNIST)
  assert calls == [1]  # Only the unpacked record.


def test_small_batches_use_the_per_example_decoder(monkeypatch):
  monkeypatch.setattr(batch, 'SMALL_BATCH', 10)
  monkeypatch.setattr(batch.tf_example_layout, 'decode_same_layout', lambda *a: None)
  calls = []
  reference = tf_example.parse_examples
  monkeypatch.setattr(batch.tf_example, 'parse_examples',
                      lambda b, s, w=None: calls.append(len(b)) or reference(b, s, w))
  rng = np.random.default_rng(5)
  batch.parse_examples(_emnist(rng, 9), EMNIST)
  batch.parse_examples(_emnist(rng, 10), EMNIST)
  assert calls == [9]


def test_same_layout_stage_takes_tf_records_and_leaves_the_rest(vectorize_every_batch):
  if vectorize_every_batch != 'layout':
    pytest.skip('the same-layout stage only')
  spec = {'label': F((), 'int64'), 'pixels': F((28, 28), 'float32')}

  def record(label, extra, note=b'n'):
    return encode_example({'label': ('int64', [label]), 'extra': ('int64', extra),
                           'note': ('bytes', [note]), 'pixels': ('float', [label / 7] * 784)})

  records = [record(i, [300]) for i in range(4)]
  # Same length, other layout bytes (a renamed feature); same length and layout bytes, but the
  # packed run holds two varints instead of one; another length (a 10-byte label).
  other_key = records[1].replace(b'note', b'notf')
  two_varints = record(5, [1, 1])
  long_label = record(-1, [300])
  assert len(other_key) == len(two_varints) == len(records[0]) != len(long_label)
  blobs = records + [other_key, two_varints, long_label] + records
  got = assert_same(blobs, spec)
  assert got['label'].tolist() == [0, 1, 2, 3, 1, 5, -1, 0, 1, 2, 3]
  starts = np.cumsum([0] + [len(b) for b in blobs[:-1]])
  decoded, _ = batch.tf_example_layout.decode_same_layout(blobs, b''.join(blobs), starts, spec)
  assert decoded.tolist() == [True] * 4 + [False] * 3 + [True] * 4
  damaged = bytearray(records[0])
  at = damaged.index(b'label') + 11
  assert damaged[at] == 0  # The label's one-byte varint: with its top bit set it has no end.
  damaged[at] |= 0x80
  assert batch.tf_example_layout.decode_same_layout(
      [bytes(damaged)] + records, b''.join([bytes(damaged)] + records),
      np.cumsum([0] + [len(records[0])] * 4), spec) is None
  assert_same([bytes(damaged)] + records, spec)
