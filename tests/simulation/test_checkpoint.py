"""Checkpointer: exact round trips (typed keys included), rounds kept, mismatches named."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_like.simulation.checkpoint import Checkpointer


class State(NamedTuple):
  weights: dict
  empty: tuple
  raw_key: jax.Array
  typed_key: jax.Array
  step: jax.Array


def _state(seed):
  key = jax.random.key(seed)
  return State(
      weights={'w': jax.random.normal(key, (3, 4)), 'b': jnp.arange(4, dtype=jnp.bfloat16)},
      empty=(),
      raw_key=jax.random.key_data(key),
      typed_key=jax.random.split(key)[0],
      step=jnp.asarray(seed, jnp.int32),
  )


def test_round_trip_is_exact_and_keeps_types(tmp_path):
  checkpointer = Checkpointer(tmp_path, max_to_keep=2)
  assert checkpointer.latest_round() is None
  for r in (1, 2, 3):
    checkpointer.save(r, _state(r), {'history': [{'round': r, 'loss': 0.5}]})
  assert checkpointer.all_rounds() == [2, 3]  # max_to_keep
  restored, meta = checkpointer.restore(_state(0))
  assert meta['round'] == 3 and meta['history'] == [{'round': 3, 'loss': 0.5}]
  assert isinstance(restored, State) and restored.empty == ()
  assert jnp.issubdtype(restored.typed_key.dtype, jax.dtypes.prng_key)
  expected = _state(3)
  np.testing.assert_array_equal(
      jax.random.key_data(restored.typed_key), jax.random.key_data(expected.typed_key)
  )
  restored_leaves = jax.tree.leaves(restored._replace(typed_key=0))
  for a, b in zip(restored_leaves, jax.tree.leaves(expected._replace(typed_key=0)), strict=True):
    assert np.asarray(a).dtype == np.asarray(b).dtype
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
  older, meta = Checkpointer(tmp_path).restore(_state(0), round_num=2)
  assert int(older.step) == 2 and meta['round'] == 2


def test_a_missing_round_and_another_model_are_named(tmp_path):
  checkpointer = Checkpointer(tmp_path)
  with pytest.raises(FileNotFoundError, match='No committed checkpoint'):
    checkpointer.restore(_state(0))
  checkpointer.save(1, _state(1), {})
  other = {'something': jnp.zeros(2)}
  with pytest.raises(ValueError, match='does not match'):
    checkpointer.restore(other)


def test_a_failed_write_is_removed_and_named(tmp_path, monkeypatch):
  """A full disk mid-save: the partial directory is removed, earlier checkpoints stay."""
  import errno
  import os

  from fedjax_like.simulation.checkpoint import CheckpointWriteError

  checkpointer = Checkpointer(tmp_path)
  checkpointer.save(1, _state(1), {})
  manager = checkpointer._manager

  def full_disk(step, args=None, force=False):
    os.makedirs(tmp_path / f'{step}.orbax-checkpoint-tmp-123' / 'state')
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(manager, 'save', full_disk)
  with pytest.raises(CheckpointWriteError, match='round 2.*No space left.*resumes from round 1'):
    checkpointer.save(2, _state(2), {})
  assert sorted(os.listdir(tmp_path)) == ['1']
  checkpointer.close()
