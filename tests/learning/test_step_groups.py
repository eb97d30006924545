"""Ragged cohorts in step groups: little padding computed, and the same results as sequential."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from learning_reference import BATCH, NUM_CLASSES, NUM_FEATURES, dense_model, make_clients

import fedjax_like as fl
from fedjax_like.core import cohort


def emnist_like_steps(num_clients, seed, batch=20):
  """Steps per client for sizes shaped like federated EMNIST's: log-normal, mean ~226, long tail."""
  rng = np.random.default_rng(seed)
  sizes = np.clip(np.round(rng.lognormal(np.log(226) - 0.18, 0.6, num_clients)), 10, 1200)
  return np.ceil(sizes / batch).astype(int)


def check_plan(plan, steps, shards):
  n = steps.size
  assert sorted(plan.order.tolist()) == list(range(n))  # a permutation of the cohort
  per_device = n // shards
  assert sum(c for c, _ in plan.groups) == per_device
  laid_out = steps[plan.order].reshape(shards, per_device)
  start, computed = 0, 0
  for count, budget in plan.groups:
    assert laid_out[:, start:start + count].max() <= budget  # every client fits its group
    computed += shards * count * budget
    start += count
  # Waste as the issue defines it: masked (computed but padding) steps over computed steps.
  np.testing.assert_allclose(plan.waste, (computed - steps.sum()) / computed, rtol=1e-12)
  plain = (n * steps.max() - steps.sum()) / (n * steps.max())
  np.testing.assert_allclose(plan.ungrouped_waste, plain, rtol=1e-12)


@pytest.mark.parametrize('num_clients', [300, 1000, 10_000])
def test_plan_keeps_padding_under_15_percent_on_emnist_like_cohorts(num_clients):
  for seed in range(3):
    steps = emnist_like_steps(num_clients, seed)
    plan = cohort.plan_step_groups(steps)
    check_plan(plan, steps, 1)
    assert plan.ungrouped_waste > 0.7  # what one padded block would compute
    assert plan.waste < 0.15, (seed, plan.waste, plan.groups)
    assert len(plan.groups) <= 12


def test_plan_for_a_device_mesh_deals_clients_round_robin():
  steps = emnist_like_steps(1000, 0)
  plan = cohort.plan_step_groups(steps, num_shards=8)
  check_plan(plan, steps, 8)
  assert plan.waste < 0.16
  blocks = steps[plan.order].reshape(8, -1)
  assert np.ptp(blocks.sum(axis=1)) < 0.1 * blocks.sum(axis=1).mean()  # balanced devices
  uneven = cohort.plan_step_groups(steps[:999], num_shards=8)
  assert uneven.groups is None  # cannot be dealt evenly: one padded block, as before


def test_a_plan_is_kept_with_budgets_raised_while_it_stays_efficient():
  first = cohort.plan_step_groups(emnist_like_steps(1000, 0))
  steps = emnist_like_steps(1000, 1)
  second = cohort.plan_step_groups(steps, previous=first)
  check_plan(second, steps, 1)
  fresh = cohort.plan_step_groups(steps)
  counts = [c for c, _ in first.groups]
  assert [c for c, _ in second.groups] == counts  # the same groups: one compiled program
  assert all(b2 >= b1 for (_, b1), (_, b2) in zip(first.groups, second.groups, strict=True))
  assert second.waste <= max(0.15, fresh.waste + cohort._RATCHET_SLACK)
  longer = steps * 3  # does not fit the old budgets: they are raised, the groups stay
  third = cohort.plan_step_groups(longer, previous=second)
  check_plan(third, longer, 1)
  assert [c for c, _ in third.groups] == counts and third.groups != second.groups
  # A plan far worse than a fresh one is replaced: every client in one group of the longest.
  flat = cohort.StepPlan(first.order, ((1000, 200),), 0.0, 0.0)
  assert cohort.plan_step_groups(steps, previous=flat).groups != ((1000, 200),)


@pytest.mark.parametrize('num_clients,slack,most', [(1000, None, 10), (100, float('inf'), 10)])
def test_sampled_cohorts_settle_on_few_compiled_plans(num_clients, slack, most):
  # Rounds draw different clients, so the longest ones differ every round; replanning each time
  # would recompile the round every time.
  population = emnist_like_steps(3400, 7)
  rng = np.random.default_rng(0)
  kwargs = {} if slack is None else {'keep_slack': slack}
  plan, plans, wastes = None, [], []
  for _ in range(60):
    steps = population[rng.choice(population.size, num_clients, replace=False)]
    plan = cohort.plan_step_groups(steps, previous=plan, **kwargs)
    check_plan(plan, steps, 1)
    plans.append(plan.groups)
    wastes.append(plan.waste)
  assert len(set(plans)) <= most, len(set(plans))
  if slack is None:  # vectorized: the padding computed stays bounded too
    assert np.mean(wastes) < 0.3, np.mean(wastes)


def test_step_budget_ladder():
  budgets = [cohort.step_budget(s) for s in range(1, 300)]
  assert all(b >= s for s, b in zip(range(1, 300), budgets))
  assert all(b <= 1.25 * s for s, b in zip(range(1, 300), budgets))
  assert len(set(budgets)) < 40  # few distinct shapes to compile


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
def test_vectorized_step_groups_equal_sequential(name, loop, monkeypatch):
  build = BUILDERS[name]
  monkeypatch.setattr(cohort, '_loop_kind', lambda config: loop)  # CPU's loop, or accelerators'
  grouped, got = run_rounds(build, 'vmap')
  assert grouped._plan is not None and len(grouped._plan.groups) > 1  # groups were used
  assert grouped.padding_waste < grouped._plan.ungrouped_waste
  # Clients side by side stop at their group's longest real step count ('while'), or run its
  # whole budget ('scan').
  steps = sorted((-(-n // BATCH) for n in SIZES), reverse=True)
  computed, start = 0, 0
  for count, budget in grouped._plan.groups:
    computed += count * (max(steps[start:start + count]) if loop == 'while' else budget)
    start += count
  np.testing.assert_allclose(grouped.padding_waste, 1 - sum(steps) / computed, rtol=1e-12)
  assert grouped.padding_waste <= grouped._plan.waste + 1e-12
  sequential, expected = run_rounds(build, 'sequential')
  assert sequential.padding_waste == 0.0
  for (s1, m1), (s2, m2) in zip(got, expected):
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        (s1.global_model_weights, m1['client_work']),
        (s2.global_model_weights, m2['client_work']),
    )


def test_step_groups_too_short_would_change_the_result():
  # The groups must cover every client's steps: a budget cut below a client's length changes the
  # update, so the equality above is a real check of the planner (not of inert truncation).
  model = dense_model()
  datasets = [d.batch(BATCH) for d in make_clients([12, 12, 12, 12])]  # 3 steps each
  build = BUILDERS['fed_avg_momentum']
  with cohort.execution('vmap'):
    state0 = build(model).initialize()
    full = build(model).next(state0, datasets)[0]
  with cohort.execution('vmap', step_groups=((4, 2),)):
    process = build(model)
    cut = process._next_packed(state0, fl.learning.process.packed_cohort(datasets, model))[0]
  diff = jax.tree.map(
      lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
      full.global_model_weights.trainable, cut.global_model_weights.trainable,
  )
  assert max(jax.tree.leaves(diff)) > 1e-4


def test_step_groups_that_do_not_cover_the_cohort_are_refused():
  datasets = [d.batch(BATCH) for d in make_clients([12, 12, 12])]
  with cohort.execution('vmap', step_groups=((2, 3),)):
    process = BUILDERS['fed_avg_momentum'](dense_model())
    with pytest.raises(ValueError, match='step_groups cover 2 clients'):
      process.next(process.initialize(), datasets)
  with pytest.raises(ValueError, match='positive integers'):
    cohort.ExecutionConfig('vmap', step_groups=((0, 3),))


# ----- the cohort packed in blocks ---------------------------------------------------------------

LONG_TAIL = [160] * 8 + [8] * 72  # 40 and 2 steps at batch 4: one padded block would be 86% padding


@pytest.mark.parametrize('strategy', ['vmap', 'chunked', 'sequential'])
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
  assert process._plan.groups == ((8, 40), (72, 2))  # the long clients' block, the short ones'
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


def test_dropout_keys_do_not_depend_on_the_padding_the_engine_cuts():
  spec = (jax.ShapeDtypeStruct((NUM_FEATURES,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
  model = fl.models.from_linen(DropoutModel(), spec)
  datasets = [d.batch(BATCH) for d in make_clients(LONG_TAIL[::8] + SIZES, seed=1)]
  longest = max(d.num_batches for d in datasets)
  runs = {
      'vmap, step groups': cohort.ExecutionConfig('vmap'),
      'sequential, step groups': cohort.ExecutionConfig('sequential'),
      # One group as long as the longest client: every client runs all its padding steps.
      'all steps': cohort.ExecutionConfig('sequential', step_groups=((len(datasets), longest),)),
  }
  results = {}
  for name, config in runs.items():
    with cohort.using(config):
      process = fl.learning.algorithms.build_weighted_fed_avg(
          model, fl.learning.optimizers.build_sgdm(0.1)
      )
      state, _ = process.next(process.initialize(), datasets)
      results[name] = state.global_model_weights.trainable
  # Grouped clients stop at their group's budget, short of the longest client; their dropout masks
  # must still be the ones they get when every step is there.
  for name in ('vmap, step groups', 'sequential, step groups'):
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        results[name], results['all steps'],
    )
