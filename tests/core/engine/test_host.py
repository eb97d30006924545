"""The host side of a round: layout, block packing from a CohortSource, per-client reordering."""

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_like.core.engine import Runtime, host
from fedjax_like.data import Dataset
from fedjax_like.data.cohort_source import CohortSource


def _source(sizes, batch=2):
  rng = np.random.default_rng(0)
  datasets = [Dataset((rng.normal(size=(n, 3)).astype(np.float32), np.zeros(n, np.int32)),
                      client_id=f'c{i}').batch(batch) for i, n in enumerate(sizes)]
  return CohortSource(datasets), datasets


def _round(engine, replicated, data, per_client):
  # Each client's real steps, its per-client input echoed back, and the sum of its pixels.
  steps = jnp.sum(jnp.any(data.mask, axis=-1), axis=1)
  pixels = jnp.sum(data.batches[0] * data.mask[..., None], axis=(1, 2, 3))
  return steps, per_client, pixels + replicated


def test_run_round_packs_blocks_in_layout_order_and_reorders_per_client_inputs():
  sizes = [3, 9, 1, 6, 4]
  source, datasets = _source(sizes)
  runtime = Runtime('vmap')
  run = runtime.run_round(_round, 'test', jnp.float32(0.5), source,
                          (np.arange(5, dtype=np.int32) * 10,))
  steps, echoed, pixels = jax.device_get(run.outputs)
  order = run.order
  assert sorted(order.tolist()) == list(range(5))
  # Longest first: position k holds client order[k], with its own inputs and data.
  np.testing.assert_array_equal(steps, [datasets[i].num_batches for i in order])
  np.testing.assert_array_equal(echoed, np.asarray(order) * 10)
  want = [float(datasets[i].batches[0].sum()) + 0.5 for i in order]
  np.testing.assert_allclose(pixels, want, rtol=1e-5)
  assert list(steps) == sorted(steps, reverse=True)


def test_the_compiled_round_is_reused_for_a_cohort_of_the_same_layout():
  runtime = Runtime('sequential')
  first = runtime.run_round(_round, 'k', jnp.float32(0.0), _source([4, 4, 2])[0],
                            (np.zeros(3, np.int32),))
  again = runtime.run_round(_round, 'k', jnp.float32(1.0), _source([4, 4, 2])[0],
                            (np.ones(3, np.int32),))
  assert again.compiled is first.compiled


def test_join_blocks_pads_steps_and_keeps_device_major_order():
  a = np.arange(2 * 3).reshape(2, 3).astype(np.float32)  # 2 clients x 3 steps
  b = np.arange(2 * 1).reshape(2, 1).astype(np.float32) + 100  # 2 clients x 1 step
  joined = np.asarray(host.join_blocks((a, b), 1))
  np.testing.assert_array_equal(joined, [[0, 1, 2], [3, 4, 5], [100, 0, 0], [101, 0, 0]])
  two = np.asarray(host.join_blocks((a, b), 2))  # device 0: rows a0, b0; device 1: a1, b1
  np.testing.assert_array_equal(two, [[0, 1, 2], [100, 0, 0], [3, 4, 5], [101, 0, 0]])


def test_a_read_only_packed_cohort_is_packed_and_placed_once_per_layout(monkeypatch):
  from fedjax_like.data.packing import PackedCohort, pack_cohort

  class _Model:
    input_spec = (jax.ShapeDtypeStruct((3,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
    num_outputs = 2

  _, datasets = _source([3, 9, 1, 6, 4])
  packed, model = pack_cohort(datasets), _Model()
  writable = PackedCohort(jax.tree.map(np.array, packed.batches), np.array(packed.mask),
                          packed.client_ids)
  takes = []
  real_take = CohortSource.take
  monkeypatch.setattr(CohortSource, 'take', lambda s, *a: takes.append(1) or real_take(s, *a))
  per_client = (np.arange(5, dtype=np.int32),)
  for strategy in ('vmap', 'sequential'):
    runtime = Runtime(strategy)
    want = jax.device_get(runtime.run_round(_round, 'k', jnp.float32(0.5),
                                            CohortSource(writable, model), per_client).outputs)
    writable_takes = len(takes)
    for _ in range(3):
      run = runtime.run_round(_round, 'k', jnp.float32(0.5), CohortSource(packed, model),
                              per_client)
      for got, expected in zip(jax.device_get(run.outputs), want, strict=True):
        np.testing.assert_array_equal(got, expected)
    # Packed once for this layout (a block per step group), then kept with the cohort.
    assert 0 < len(takes) - writable_takes <= len(run.layout.blocks)
    takes.clear()


def test_one_cohort_is_kept_at_a_time_and_dropped_with_it():
  import gc

  from fedjax_like.data import cohort_source, packing

  class _Model:
    input_spec = (jax.ShapeDtypeStruct((3,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
    num_outputs = 2

  model, runtime, per_client = _Model(), Runtime('sequential'), (np.zeros(3, np.int32),)
  first = packing.pack_cohort(_source([4, 2, 3])[1])
  second = packing.pack_cohort(_source([5, 1, 2])[1])
  runtime.run_round(_round, 'k', jnp.float32(0.0), CohortSource(first, model), per_client)
  assert len(cohort_source._KEPT) == 1 and cohort_source._KEPT[0][0]() is first
  runtime.run_round(_round, 'k', jnp.float32(0.0), CohortSource(second, model), per_client)
  kept = cohort_source._KEPT
  assert len(kept) == 1 and kept[0][0]() is second  # the first one released
  del second
  gc.collect()
  assert cohort_source._KEPT == []  # nothing held for a cohort that is gone


def test_a_kept_cohort_follows_the_model_it_is_used_with():
  from fedjax_like.data import packing

  def model_of(dtype):
    class _Model:
      input_spec = (jax.ShapeDtypeStruct((3,), dtype), jax.ShapeDtypeStruct((), jnp.int32))
      num_outputs = 2
    return _Model()

  runtime, per_client = Runtime('sequential'), (np.zeros(3, np.int32),)
  packed = packing.pack_cohort(_source([4, 2, 3])[1])
  for dtype in (jnp.float32, jnp.float16, jnp.float32):
    run = runtime.run_round(_round, 'k', jnp.float16(0.0), CohortSource(packed, model_of(dtype)),
                            per_client)
    assert run.outputs[2].dtype == dtype  # the blocks were checked and cast for this model
