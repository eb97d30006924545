"""The runtime: layouts from the cohort alone, its compile cache, and builders that take it."""

import sys
import pathlib

import jax
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / 'learning'))
from learning_reference import BATCH, dense_model, make_clients  # noqa: E402

import fedjax_like as fl  # noqa: E402
from fedjax_like.core.engine import Runtime, execution  # noqa: E402


def steps_of(n, seed):
  rng = np.random.default_rng(seed)
  return rng.integers(1, 30, n)


@pytest.mark.parametrize('strategy', ['vmap', 'chunked', 'sequential', 'lanes'])
def test_layout_is_a_function_of_the_cohort_alone(strategy):
  runtime = Runtime(strategy, chunk_size=8)
  steps = steps_of(120, 0)
  first = runtime.layout(steps)
  runtime.layout(steps_of(120, 1))  # whatever ran in between
  again = Runtime(strategy, chunk_size=8).layout(steps.copy())  # a fresh runtime: a restart
  assert first.step_groups == again.step_groups and first.padding_waste == again.padding_waste
  for (rows_a, budget_a), (rows_b, budget_b) in zip(first.blocks, again.blocks, strict=True):
    np.testing.assert_array_equal(rows_a, rows_b)
    assert budget_a == budget_b
  assert (first.lanes is not None) == (strategy == 'lanes')
  covered = np.sort(np.concatenate([rows for rows, _ in first.blocks]))
  np.testing.assert_array_equal(covered, np.arange(120))
  # Planned once per cohort shape: the same step counts again give the kept plan, and a cohort
  # that differs in one client gets its own.
  assert runtime.layout(steps.copy()) is first
  other = steps.copy()
  other[5] += 1
  assert runtime.layout(other) is not first


def sgd_process(runtime=None):
  return fl.learning.algorithms.build_weighted_fed_avg(
      dense_model(), fl.learning.optimizers.build_sgdm(0.1, momentum=0.9),
      runtime=runtime,
  )


def test_builders_take_a_runtime_and_the_ambient_one_does_not_override_it():
  datasets = [d.batch(BATCH) for d in make_clients([9, 3, 14, 6, 2, 11])]
  process = sgd_process(Runtime('lanes'))
  with execution('sequential'):
    state, _ = process.next(process.initialize(), datasets)
  assert process._last_layout.lanes is not None  # its own runtime ran the round
  ambient = sgd_process()
  with execution('vmap'):
    ambient.next(ambient.initialize(), datasets)
  assert ambient._last_layout.lanes is None and ambient._last_layout.padding_waste > 0


def test_the_compile_cache_reuses_a_round_for_the_same_layout_and_shapes():
  runtime = Runtime('vmap')
  process = sgd_process(runtime)
  datasets = [d.batch(BATCH) for d in make_clients([8, 8, 8, 8])]
  state = process.initialize()
  state, _ = process.next(state, datasets)
  first = process._last_compiled
  state, _ = process.next(state, [d.batch(BATCH) for d in make_clients([8, 8, 8, 8], seed=5)])
  assert process._last_compiled is first
  process.next(state, [d.batch(BATCH) for d in make_clients([8, 8, 8, 40])])
  assert process._last_compiled is not first


@pytest.mark.parametrize('strategy', ['vmap', 'chunked', 'sequential', 'lanes'])
def test_a_resumed_run_is_bit_identical_with_cohorts_of_120_clients(strategy):
  population = make_clients(list(np.random.default_rng(2).integers(1, 24, 300)), seed=4)
  rng = np.random.default_rng(9)
  cohorts = [rng.choice(len(population), 120, replace=False) for _ in range(3)]

  def rounds(process, state, which):
    for r in which:
      state, metrics = process.next(state, [population[i].batch(BATCH) for i in cohorts[r]])
    return state, metrics

  initial = sgd_process().initialize()
  process = sgd_process(Runtime(strategy, chunk_size=16))
  half, _ = rounds(process, initial, range(1))
  # Interrupted after round 0: the state goes to the host (as a checkpoint does) and a fresh
  # process with a fresh runtime (a new program, nothing remembered) finishes the run.
  saved = jax.tree.map(np.asarray, half)
  straight, metrics = rounds(process, half, range(1, 3))
  resumed, resumed_metrics = rounds(sgd_process(Runtime(strategy, chunk_size=16)), saved,
                                    range(1, 3))
  for a, b in zip(jax.tree.leaves((straight, metrics)), jax.tree.leaves((resumed,
                                                                          resumed_metrics))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
