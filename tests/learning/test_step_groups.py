"""Ragged cohorts in step groups and lanes: little padding computed, the same results as sequential.

(The plans themselves are tested in tests/core/engine/test_plan.py.)"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from learning_reference import BATCH, NUM_CLASSES, NUM_FEATURES, dense_model, make_clients

import fedjax_like as fl
from fedjax_like.core import cohort
from fedjax_like.core.engine import ExecutionConfig


SIZES = [3, 40, 7, 21, 5, 9, 33, 2, 12, 16, 27, 1, 18, 6, 44, 11, 4, 25, 8, 30, 14, 2, 36, 10]


def run_rounds(build, strategy, rounds=2, cohorts=None):
  datasets = make_clients(SIZES)
  cohorts = cohorts or [list(range(len(SIZES)))] * rounds
  with cohort.execution(strategy):
    process = build(dense_model())
    state = process.initialize()
    history = []
    for members in cohorts:
      state, metrics = process.next(state, [datasets[i].batch(BATCH) for i in members])
      history.append((state, metrics))
  return process, history


BUILDERS = {
    'fed_avg_momentum': lambda m: fl.learning.algorithms.build_weighted_fed_avg(
        m, fl.learning.optimizers.build_sgdm(0.1, momentum=0.9)
    ),
    'scaffold': lambda m: fl.learning.algorithms.build_scaffold(
        m, client_learning_rate=0.1, num_total_clients=len(SIZES)
    ),
    'mime_lite': lambda m: fl.learning.algorithms.build_weighted_mime_lite(
        m, fl.learning.optimizers.build_sgdm(0.1, momentum=0.9)
    ),
    'fed_sgd': lambda m: fl.learning.algorithms.build_fed_sgd(m),
}


@pytest.mark.parametrize('loop', ['while', 'scan'])
@pytest.mark.parametrize('name', sorted(BUILDERS))
def test_vectorized_step_groups_and_lanes_equal_sequential(name, loop, monkeypatch):
  build = BUILDERS[name]
  # 'while' is the CPU loop, 'scan' the accelerators' (static trip count), forced here.
  monkeypatch.setattr(ExecutionConfig, 'loop_kind', property(lambda self: loop))
  grouped, got = run_rounds(build, 'vmap')
  layout = grouped._last_layout
  assert layout.step_groups is not None and len(layout.step_groups) > 1  # groups were used
  # Clients side by side stop at their group's longest real step count ('while'), or run its
  # whole budget ('scan').
  steps = sorted((-(-n // BATCH) for n in SIZES), reverse=True)
  computed, start = 0, 0
  for count, budget in layout.step_groups:
    computed += count * (max(steps[start:start + count]) if loop == 'while' else budget)
    start += count
  np.testing.assert_allclose(grouped.padding_waste, 1 - sum(steps) / computed, rtol=1e-12)
  laned, in_lanes = run_rounds(build, 'lanes')
  assert laned._last_layout.lanes is not None
  assert laned.padding_waste <= 0.10 and laned.padding_waste < grouped.padding_waste
  sequential, expected = run_rounds(build, 'sequential')
  assert sequential.padding_waste == 0.0
  for run in (got, in_lanes):
    for (s1, m1), (s2, m2) in zip(run, expected):
      jax.tree.map(
          lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
          (s1.global_model_weights, m1['client_work']),
          (s2.global_model_weights, m2['client_work']),
      )


# ----- the cohort packed in blocks ---------------------------------------------------------------

LONG_TAIL = [160] * 8 + [8] * 72  # 40 and 2 steps at batch 4: one padded block would be 86% padding


@pytest.mark.parametrize('strategy', ['vmap', 'chunked', 'sequential', 'lanes'])
def test_ragged_cohort_in_blocks_matches_numpy_fed_avg_and_holds_only_its_real_data(strategy):
  from test_fed_avg import BATCH as REF_BATCH
  from test_fed_avg import make_clients as ref_clients
  from test_fed_avg import reference_fed_avg

  assert REF_BATCH == BATCH
  datasets = ref_clients(LONG_TAIL, seed=3)
  with cohort.execution(strategy, chunk_size=8):
    process = fl.learning.algorithms.build_weighted_fed_avg(
        dense_model(), fl.learning.optimizers.build_sgdm(0.05, momentum=0.9)
    )
    state = process.initialize()
    init = state.global_model_weights.trainable
    for _ in range(2):
      state, metrics = process.next(state, [d.batch(BATCH) for d in datasets])
  layout = process._last_layout
  if strategy == 'lanes':  # one block; 8 lanes of one long client each, the short ones packed in
    assert layout.lanes is not None and layout.padding_waste <= 0.10
  else:
    assert layout.step_groups == ((8, 40), (72, 2))  # the long clients' block, the short ones'
  reference = reference_fed_avg(
      [d.elements for d in datasets], np.asarray(init['kernel']), np.asarray(init['bias']),
      rounds=2, lr=0.05, momentum=0.9,
  )
  w, b, accuracy, loss, total = reference[-1]
  got = state.global_model_weights.trainable
  np.testing.assert_allclose(got['kernel'], w, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got['bias'], b, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(float(metrics['client_work']['train']['loss']), loss, rtol=1e-5)
  assert int(metrics['client_work']['train']['num_examples']) == total

  if strategy == 'lanes':
    return  # lanes read one block padded to the longest client (see notes/README.md)
  # The round's arguments hold the two blocks (8 x 40 + 72 x 2 steps), not 80 clients x 40 steps,
  # and XLA never builds the padded array from them either (its temporaries stay below it).
  padded = len(LONG_TAIL) * 40 * BATCH * (NUM_FEATURES + 1) * 4
  blocks = (8 * 40 + 72 * 2) * BATCH * (NUM_FEATURES + 1) * 4
  analysis = process._last_compiled.memory_analysis()
  data_args = analysis.argument_size_in_bytes - sum(x.nbytes for x in jax.tree.leaves(state))
  assert data_args < 1.5 * blocks  # (+ the masks)
  assert data_args + analysis.temp_size_in_bytes < 0.75 * padded


class DropoutModel(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Dropout(0.5, deterministic=not train)(x)
    return nn.Dense(NUM_CLASSES)(x)


def test_dropout_keys_do_not_depend_on_the_runner_or_the_padding():
  """A client's s-th real step draws fold_in(key, s) under every runner, and padding steps
  (here 5 more per client than the longest needs) change nothing."""
  spec = (jax.ShapeDtypeStruct((NUM_FEATURES,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
  model = fl.models.from_linen(DropoutModel(), spec)
  datasets = [d.batch(BATCH) for d in make_clients([160, 8] + SIZES[::2], seed=1)]
  longest = max(d.num_batches for d in datasets)
  padded = fl.data.pack_cohort(datasets, num_steps=longest + 5)
  runs = {
      'vmap, step groups': ('vmap', datasets),
      'lanes': ('lanes', datasets),
      'sequential': ('sequential', datasets),
      'scan over every padded step': ('scan', padded),
  }
  results = {}
  for name, (strategy, cohort_data) in runs.items():
    runtime = fl.Runtime('vmap' if strategy == 'scan' else strategy)
    process = fl.learning.algorithms.build_weighted_fed_avg(
        model, fl.learning.optimizers.build_sgdm(0.1), runtime=runtime
    )
    if strategy == 'scan':  # the accelerators' loop: a static trip count, each step a cond
      with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ExecutionConfig, 'loop_kind', property(lambda self: 'scan'))
        state, _ = process.next(process.initialize(), cohort_data)
    else:
      state, _ = process.next(process.initialize(), cohort_data)
    results[name] = state.global_model_weights.trainable
  for name in runs:
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        results[name], results['sequential'],
    )
  assert sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(results['sequential'])) > 0
