"""Tests for the tf.train.Example decoder, against the independent encoder in tff_files.py and,
when installed, the protobuf runtime."""

from __future__ import annotations

import numpy as np
import pytest
from tff_files import encode_example, len_delim, tag, varint

from fedjax_like.data.sources import tf_example
from fedjax_like.data.sources.tf_example import FixedLenFeature, parse_example, parse_examples

_tag, _varint, _len_delim = tag, varint, len_delim


def encode_emnist_example(pixels: np.ndarray, label: int) -> bytes:
  return encode_example(
      {'pixels': ('float', pixels.reshape(-1).tolist()), 'label': ('int64', [int(label)])}
  )




def test_parse_example_kinds_and_encodings():
  floats = [0.0, 1.0, -2.5, 3.4028234663852886e38, 1e-45]
  ints = [0, 1, -1, 2**63 - 1, -(2**63), 300]
  for packed in (True, False):
    parsed = parse_example(
        encode_example(
            {'f': ('float', floats), 'i': ('int64', ints), 'b': ('bytes', [b'', b'abc'])},
            packed=packed,
        )
    )
    assert parsed['f'].dtype == np.float32 and parsed['i'].dtype == np.int64
    np.testing.assert_array_equal(parsed['f'], np.asarray(floats, dtype=np.float32))
    np.testing.assert_array_equal(parsed['i'], np.asarray(ints, dtype=np.int64))
    assert parsed['b'] == [b'', b'abc']
  assert parse_example(b'') == {}


def test_parse_example_skips_unknown_fields_and_merges_like_protobuf():
  unknown = _tag(7, 0) + _varint(5) + _tag(8, 1) + b'\0' * 8 + _tag(9, 5) + b'\0' * 4
  unknown += _len_delim(10, b'xyz')
  first = encode_example({'a': ('int64', [1]), 'b': ('float', [1.0])})
  second = encode_example({'a': ('int64', [2, 3])})
  parsed = parse_example(unknown + first + unknown + second)
  np.testing.assert_array_equal(parsed['a'], [2, 3])  # Map key seen again: the later entry wins.
  np.testing.assert_array_equal(parsed['b'], [1.0])
  empty_feature = _len_delim(1, _len_delim(1, _len_delim(1, b'e') + _len_delim(2, b'')))
  assert parse_example(empty_feature) == {'e': None}


@pytest.mark.parametrize(
    'blob',
    [b'\x0a\x05\x0a', b'\x0a', b'\xff' * 11, b'\x0b', b'\x00\x00'],
    ids=['overrun', 'no_length', 'long_varint', 'group_wire_type', 'field_zero'],
)
def test_parse_example_rejects_malformed_bytes(blob):
  with pytest.raises(tf_example.ProtoDecodeError):
    parse_example(blob)


def _protobuf_example_class():
  """tf.train.Example built from its .proto definition with the protobuf runtime (no TF)."""
  pytest.importorskip('google.protobuf')
  from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

  F = descriptor_pb2.FieldDescriptorProto
  proto = descriptor_pb2.FileDescriptorProto(
      name='fedjax_like_test_example.proto', package='fedjax_like_test', syntax='proto3'
  )

  def message(name, fields, nested=()):
    m = proto.message_type.add(name=name)
    for spec in fields:
      m.field.add(**spec)
    for n in nested:
      m.nested_type.add().CopyFrom(n)
    return m

  rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
  message('BytesList', [dict(name='value', number=1, label=rep, type=F.TYPE_BYTES)])
  message('FloatList', [dict(name='value', number=1, label=rep, type=F.TYPE_FLOAT)])
  message('Int64List', [dict(name='value', number=1, label=rep, type=F.TYPE_INT64)])
  kinds = [('bytes_list', 'BytesList'), ('float_list', 'FloatList'), ('int64_list', 'Int64List')]
  feature = message(
      'Feature',
      [
          dict(name=n, number=i, label=opt, type=F.TYPE_MESSAGE, type_name=f'.fedjax_like_test.{t}',
               oneof_index=0)
          for i, (n, t) in enumerate(kinds, start=1)
      ],
  )
  feature.oneof_decl.add(name='kind')
  entry = descriptor_pb2.DescriptorProto(name='FeatureEntry')
  entry.field.add(name='key', number=1, label=opt, type=F.TYPE_STRING)
  entry.field.add(
      name='value', number=2, label=opt, type=F.TYPE_MESSAGE, type_name='.fedjax_like_test.Feature'
  )
  entry.options.map_entry = True
  message(
      'Features',
      [dict(name='feature', number=1, label=rep, type=F.TYPE_MESSAGE,
            type_name='.fedjax_like_test.Features.FeatureEntry')],
      nested=[entry],
  )
  message(
      'Example',
      [dict(name='features', number=1, label=opt, type=F.TYPE_MESSAGE,
            type_name='.fedjax_like_test.Features')],
  )
  pool = descriptor_pool.DescriptorPool()
  pool.Add(proto)
  return message_factory.GetMessageClass(pool.FindMessageTypeByName('fedjax_like_test.Example'))


def test_decoder_and_test_encoder_agree_with_protobuf_runtime():
  example_class = _protobuf_example_class()
  rng = np.random.default_rng(1)
  pixels = rng.random(784, dtype=np.float32)
  example = example_class()
  example.features.feature['pixels'].float_list.value.extend(pixels.tolist())
  example.features.feature['label'].int64_list.value.append(61)
  example.features.feature['neg'].int64_list.value.extend([-5, 2**40])
  example.features.feature['id'].bytes_list.value.append(b'f0000_14')
  parsed = parse_example(example.SerializeToString())
  np.testing.assert_array_equal(parsed['pixels'], pixels)
  np.testing.assert_array_equal(parsed['label'], [61])
  np.testing.assert_array_equal(parsed['neg'], [-5, 2**40])
  assert parsed['id'] == [b'f0000_14']
  # And the encoder these tests use writes what protobuf reads.
  ours = example_class.FromString(encode_emnist_example(pixels.reshape(28, 28), 7))
  np.testing.assert_array_equal(
      np.asarray(ours.features.feature['pixels'].float_list.value, np.float32), pixels
  )
  assert list(ours.features.feature['label'].int64_list.value) == [7]


# parse_examples: tf.io.parse_example with FixedLenFeature -----------------------------------------


def test_parse_examples_stacks_shapes_and_dtypes_in_spec_order():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(3, 4, 4, 3))
  blobs = [
      encode_example({
          'z_text': ('bytes', [f'row {i}'.encode()]),
          'image': ('int64', images[i].reshape(-1).tolist()),
          'score': ('float', [i / 2]),
          'ignored': ('int64', [7]),
      })
      for i in range(3)
  ]
  spec = {
      'score': FixedLenFeature((), 'float32'),
      'image': FixedLenFeature((4, 4, 3), 'int64'),
      'z_text': FixedLenFeature((), 'string'),
  }
  out = parse_examples(blobs, spec)
  assert list(out) == ['score', 'image', 'z_text']
  assert out['score'].dtype == np.float32 and out['score'].shape == (3,)
  assert out['image'].dtype == np.int64 and out['image'].shape == (3, 4, 4, 3)
  assert out['z_text'].dtype == object and out['z_text'].shape == (3,)
  np.testing.assert_array_equal(out['image'], images)
  np.testing.assert_array_equal(out['score'], [0.0, 0.5, 1.0])
  assert out['z_text'].tolist() == [b'row 0', b'row 1', b'row 2']
  assert all(type(s) is bytes for s in out['z_text'])


def test_parse_examples_of_nothing_gives_empty_arrays():
  spec = {'s': FixedLenFeature((), 'string'), 'x': FixedLenFeature((2,), 'int64')}
  out = parse_examples([], spec)
  assert out['s'].shape == (0,) and out['x'].shape == (0, 2) and out['x'].dtype == np.int64


@pytest.mark.parametrize(
    'features, message',
    [
        ({}, "'x' should hold 2 int64 values; got nothing"),
        ({'x': ('int64', [1, 2, 3])}, "'x' should hold 2 int64 values; got 3 int64 values"),
        ({'x': ('float', [1.0, 2.0])}, "'x' should hold 2 int64 values; got 2 float32 values"),
        ({'x': ('bytes', [b'a', b'b'])}, 'got a bytes_list of 2 values'),
    ],
)
def test_parse_examples_rejects_what_fixed_len_feature_rejects(features, message):
  blobs = [encode_example({'x': ('int64', [1, 2])}), encode_example(features)]
  with pytest.raises(tf_example.FeatureSpecError, match=message) as info:
    parse_examples(blobs, {'x': FixedLenFeature((2,), 'int64')}, where=lambda i: f'file.db row {i}')
  assert str(info.value).startswith('file.db row 1: ')


def test_parse_examples_names_the_malformed_example():
  with pytest.raises(tf_example.ProtoDecodeError, match='example 1: not a valid tf.train.Example'):
    parse_examples([encode_example({}), b'\x0a\x05\x0a'], {})


def test_parse_examples_checks_the_spec():
  with pytest.raises(ValueError, match="'uint8'"):
    parse_examples([], {'x': FixedLenFeature((), 'uint8')})
  with pytest.raises(TypeError, match='FixedLenFeature'):
    parse_examples([], {'x': ((), 'int64')})
