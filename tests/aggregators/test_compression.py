"""Bits on the wire: the accounting every compressor reports, and the shared argument checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_like.aggregators.compression import (
    bits_measurements,
    check_threshold,
    compressed_leaves,
)


def test_bits_count_compressed_and_whole_tensors():
  value_type = {'kernel': jax.ShapeDtypeStruct((300, 100), jnp.float32),
                'bias': jax.ShapeDtypeStruct((100,), jnp.float32)}
  assert compressed_leaves(value_type, 100) == [False, True]  # leaves: bias, kernel
  measured = bits_measurements(value_type, lambda n: 8 * n + 64, threshold=100)
  sent = 8 * 30000 + 64 + 32 * 100
  assert float(measured['bits_per_client']) == sent
  assert float(measured['float32_bits_per_client']) == 32 * 30100
  np.testing.assert_allclose(measured['compression_ratio'], 32 * 30100 / sent, rtol=1e-6)


def test_large_models_do_not_overflow():
  value_type = jax.ShapeDtypeStruct((200_000_000,), jnp.float32)
  measured = bits_measurements(value_type, lambda n: n, threshold=0)
  assert float(measured['float32_bits_per_client']) == pytest.approx(6.4e9)
  assert float(measured['compression_ratio']) == 32.0


def test_threshold_checks():
  assert check_threshold(0) == 0
  with pytest.raises(ValueError, match='MORE than threshold elements'):
    check_threshold(-1)
  with pytest.raises(TypeError, match='threshold must be an int'):
    check_threshold(1.5)
