"""``tf.train.Example`` decoding without TensorFlow: the wire format, and TF's fixed-length parsing.

TFF's published files (SQLite rows, TFRecords) hold serialized ``tf.train.Example`` protos. This
module reads them with a small protobuf wire-format reader, so no TensorFlow or protobuf package is
needed:

* :func:`parse_example` decodes one serialized Example into ``{name: values}``.
* :func:`parse_examples` decodes many under a ``{name: FixedLenFeature(shape, dtype)}`` spec, as
  ``tf.io.parse_example`` with ``tf.io.FixedLenFeature`` does, into stacked NumPy arrays
  ``[num_examples, *shape]``: float32 for ``'float32'``, int64 for ``'int64'``, and an object array
  of Python ``bytes`` for ``'string'`` (what a ``tf.string`` tensor's ``.numpy()`` gives).

Errors: :class:`ProtoDecodeError` for bytes that are not a well-formed Example;
:class:`FeatureSpecError` for an Example whose features do not fit the spec (missing, of another
kind, or with the wrong number of values). Both are ``ValueError``; callers add where the bytes came
from (file, client, example).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

class ProtoDecodeError(ValueError):
  """The bytes are not a well-formed serialized protocol buffer of the expected message."""


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
  result = 0
  shift = 0
  while pos < end:
    byte = buf[pos]
    pos += 1
    result |= (byte & 0x7F) << shift
    if byte < 0x80:
      return result, pos
    shift += 7
    if shift >= 70:
      raise ProtoDecodeError('varint longer than 10 bytes')
  raise ProtoDecodeError('truncated varint')


def _fields(buf: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
  """Yields ``(field, wire_type, a, b)``: a varint's value in ``a``, else the ``buf[a:b]`` span."""
  while pos < end:
    key, pos = _read_varint(buf, pos, end)
    field, wire = key >> 3, key & 7
    if field == 0:
      raise ProtoDecodeError('field number 0')
    if wire == 0:
      value, pos = _read_varint(buf, pos, end)
      yield field, wire, value, pos
      continue
    if wire == 1:
      size = 8
    elif wire == 5:
      size = 4
    elif wire == 2:
      size, pos = _read_varint(buf, pos, end)
    else:
      raise ProtoDecodeError(f'unsupported wire type {wire} (field {field})')
    if pos + size > end:
      raise ProtoDecodeError(f'field {field} runs past the end of its message')
    yield field, wire, pos, pos + size
    pos += size


def _to_int64(value: int) -> int:
  value &= (1 << 64) - 1
  return value - (1 << 64) if value >= 1 << 63 else value


def _parse_float_list(buf: bytes, start: int, end: int, parts: list[np.ndarray]) -> None:
  for field, wire, a, b in _fields(buf, start, end):
    if field != 1:
      continue
    if wire == 2:  # Packed (what TF writes: FloatList.value is [packed = true]).
      if (b - a) % 4:
        raise ProtoDecodeError('packed float list length is not a multiple of 4')
      parts.append(np.frombuffer(buf, dtype='<f4', count=(b - a) // 4, offset=a))
    elif wire == 5:
      parts.append(np.frombuffer(buf, dtype='<f4', count=1, offset=a))
    else:
      raise ProtoDecodeError(f'FloatList.value with wire type {wire}')


def _parse_int64_list(buf: bytes, start: int, end: int, values: list[int]) -> None:
  for field, wire, a, b in _fields(buf, start, end):
    if field != 1:
      continue
    if wire == 2:  # Packed.
      pos = a
      while pos < b:
        value, pos = _read_varint(buf, pos, b)
        values.append(_to_int64(value))
    elif wire == 0:
      values.append(_to_int64(a))
    else:
      raise ProtoDecodeError(f'Int64List.value with wire type {wire}')


def _parse_bytes_list(buf: bytes, start: int, end: int, values: list[bytes]) -> None:
  for field, wire, a, b in _fields(buf, start, end):
    if field != 1:
      continue
    if wire != 2:
      raise ProtoDecodeError(f'BytesList.value with wire type {wire}')
    values.append(bytes(buf[a:b]))


_KINDS = {1: 'bytes_list', 2: 'float_list', 3: 'int64_list'}


def _parse_feature(buf: bytes, start: int, end: int) -> tuple[str | None, list[Any]]:
  """A Feature: its oneof kind (None when unset) and the values gathered so far."""
  kind: str | None = None
  values: list[Any] = []
  for field, wire, a, b in _fields(buf, start, end):
    if field not in _KINDS:
      continue
    if wire != 2:
      raise ProtoDecodeError(f'Feature field {field} with wire type {wire}')
    if _KINDS[field] != kind:  # A new oneof member replaces the previous one; a repeat merges.
      kind, values = _KINDS[field], []
    if field == 1:
      _parse_bytes_list(buf, a, b, values)
    elif field == 2:
      _parse_float_list(buf, a, b, values)
    else:
      _parse_int64_list(buf, a, b, values)
  return kind, values


def _finish_feature(kind: str | None, values: list[Any]) -> np.ndarray | list[bytes] | None:
  if kind == 'float_list':
    return np.concatenate(values) if len(values) != 1 else values[0].copy()
  if kind == 'int64_list':
    return np.asarray(values, dtype=np.int64)
  if kind == 'bytes_list':
    return values
  return None


def parse_example(serialized: bytes | bytearray | memoryview) -> dict[str, Any]:
  """Decodes a serialized ``tf.train.Example`` without TensorFlow.

  Follows ``tensorflow/core/example/{example,feature}.proto``: ``Example{features = 1: Features}``,
  ``Features{map<string, Feature> feature = 1}``, ``Feature{oneof: bytes_list = 1, float_list = 2,
  int64_list = 3}``, each list ``{repeated value = 1}`` (packed or not). Unknown fields are skipped
  and repeated occurrences merge as protobuf merges them.

  Returns:
    ``{name: value}`` where value is a float32 array (float_list), an int64 array (int64_list), a
    list of ``bytes`` (bytes_list), or None for a Feature with no kind set.

  Raises:
    ProtoDecodeError: the bytes are not a well-formed Example.
  """
  buf = bytes(serialized)
  raw: dict[str, tuple[str | None, list[Any]]] = {}
  for field, wire, a, b in _fields(buf, 0, len(buf)):
    if field != 1:
      continue
    if wire != 2:
      raise ProtoDecodeError(f'Example.features with wire type {wire}')
    for f_field, f_wire, fa, fb in _fields(buf, a, b):
      if f_field != 1:
        continue
      if f_wire != 2:
        raise ProtoDecodeError(f'Features.feature with wire type {f_wire}')
      key, feature = '', (None, [])
      for e_field, e_wire, ea, eb in _fields(buf, fa, fb):
        if e_field == 1 and e_wire == 2:
          try:
            key = buf[ea:eb].decode('utf-8')
          except UnicodeDecodeError as e:
            raise ProtoDecodeError('feature name is not UTF-8') from e
        elif e_field == 2 and e_wire == 2:
          feature = _parse_feature(buf, ea, eb)
      raw[key] = feature  # Map semantics: a later entry with the same key wins.
  return {key: _finish_feature(kind, values) for key, (kind, values) in raw.items()}


class FeatureSpecError(ValueError):
  """An Example's feature does not match its ``FixedLenFeature``: missing, other kind or size."""


# The spec's dtype names, the Feature kind each must be stored as, and the array dtype produced.
_SPEC_KINDS = {
    'float32': ('float_list', np.float32),
    'int64': ('int64_list', np.int64),
    'string': ('bytes_list', object),
}


class FixedLenFeature(NamedTuple):
  """``tf.io.FixedLenFeature(shape, dtype)`` without a default value (the feature is required).

  Attributes:
    shape: the shape of one example's value, e.g. ``()`` for a scalar or ``(32, 32, 3)``; the
      Example must hold exactly ``prod(shape)`` values, in row-major order.
    dtype: ``'float32'`` (a float_list), ``'int64'`` (an int64_list) or ``'string'`` (a
      bytes_list), the three kinds a tf.train.Example can store.
  """

  shape: tuple[int, ...]
  dtype: str


def _check_spec(spec: Mapping[str, FixedLenFeature]) -> None:
  for name, feature in spec.items():
    if not isinstance(feature, FixedLenFeature):
      raise TypeError(f'spec[{name!r}] should be a FixedLenFeature; got {feature!r}.')
    if feature.dtype not in _SPEC_KINDS:
      raise ValueError(
          f'spec[{name!r}].dtype is {feature.dtype!r}; expected one of {sorted(_SPEC_KINDS)}.'
      )


def _fixed_value(features: dict[str, Any], name: str, feature: FixedLenFeature) -> Any:
  """``tf.io.FixedLenFeature``'s check: present, of the right kind, ``prod(shape)`` values."""
  kind, dtype = _SPEC_KINDS[feature.dtype]
  count = int(np.prod(feature.shape, dtype=np.int64))
  value = features.get(name)
  if kind == 'bytes_list':
    if isinstance(value, list) and len(value) == count:
      return value
  elif isinstance(value, np.ndarray) and value.dtype == dtype and value.size == count:
    return value
  if value is None:
    got = 'nothing (missing or empty feature)'
  elif isinstance(value, np.ndarray):
    got = f'{value.size} {value.dtype.name} values'
  else:
    got = f'a bytes_list of {len(value)} values'
  want = 'bytes' if kind == 'bytes_list' else np.dtype(dtype).name
  raise FeatureSpecError(f'feature {name!r} should hold {count} {want} values; got {got}.')


def parse_examples(
    serialized: Sequence[bytes],
    spec: Mapping[str, FixedLenFeature],
    where: Callable[[int], str] | None = None,
) -> dict[str, np.ndarray]:
  """Decodes serialized Examples under a fixed-length spec, as ``tf.io.parse_example`` does.

  Args:
    serialized: ``n`` serialized ``tf.train.Example`` protos.
    spec: ``{name: FixedLenFeature(shape, dtype)}``; features of an Example that the spec does not
      name are ignored.
    where: ``i -> str`` naming where example ``i`` came from, put in front of error messages.

  Returns:
    ``{name: array[n, *shape]}`` in the spec's key order: float32, int64, or object arrays whose
    items are Python ``bytes``.

  Raises:
    ProtoDecodeError: an Example is not well-formed protobuf.
    FeatureSpecError: an Example lacks a feature, stores it as another kind, or holds the wrong
      number of values.
  """
  _check_spec(spec)
  n = len(serialized)
  out = {
      name: np.empty((n, *f.shape), dtype=_SPEC_KINDS[f.dtype][1]) for name, f in spec.items()
  }
  for i, blob in enumerate(serialized):
    try:
      features = parse_example(blob)
      for name, feature in spec.items():
        value = _fixed_value(features, name, feature)
        if feature.dtype == 'string':
          flat = out[name].reshape(n, -1)  # A view: object arrays are filled item by item.
          for j, item in enumerate(value):
            flat[i, j] = item
        else:
          out[name][i] = value.reshape(feature.shape)
    except ProtoDecodeError as e:
      prefix = f'{where(i)}: ' if where is not None else f'example {i}: '
      raise ProtoDecodeError(f'{prefix}not a valid tf.train.Example ({e}).') from e
    except FeatureSpecError as e:
      prefix = f'{where(i)}: ' if where is not None else f'example {i}: '
      raise FeatureSpecError(f'{prefix}{e}') from e
  return out
