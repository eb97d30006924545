"""Poisoning: FedAvg on the offline digits with 20% of each cohort corrupting its updates.

A report, not a test: ``python -m benchmarks.poisoning`` trains unweighted FedAvg with each
aggregator under each attack for the same rounds on the same sampled cohorts, evaluates the final
model on every client's held-out split (federated evaluation), prints a markdown table of test
accuracy (aggregator x attack) and appends it, with the machine, versions and command, to
``benchmarks/RESULTS.md`` (section "Aggregators under poisoning"). A small instance is
``tests/benchmarks/test_poisoning.py``.

**The attack** is simulated by a wrapper around the aggregator (:class:`PoisonedUpdates`, an
aggregation factory used only here): each round it picks, from a key in its state, a random 20% of
the cohort (``round(0.2 n)`` clients, exactly 4 of 20) and replaces their updates ``u`` before the
inner aggregator sees them:

- ``scaled``:    ``100 u`` (a boosted update);
- ``sign_flip``: ``-4 u`` (flipped, and scaled so that 4 attackers cancel 16 honest clients in the
  plain mean: ``0.8 u - 0.2 * 4 u = 0``);
- ``nan``:       NaN in every coordinate.

The rest of the round is FedAvg as users run it (client training, the aggregator, the server
step), so the aggregators are measured in the compiled round they run in. Every aggregator is
unweighted (``build_unweighted_fed_avg``): a weighted mean would also let attackers claim large
weights.

Task: the offline digits (``fedjax_like.data.digits``, 1,797 real digits in EMNIST's format) over
50 clients with a Dirichlet(1.0) label skew, a 784-64-10 MLP, 20 clients per round from a seeded
sampler, one local epoch of batch-16 SGD (rate 0.1), server SGD 1.0.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import fedjax_like as fl
from benchmarks._common import environment, write_section
from fedjax_like.aggregators import AggregationProcess, MeasuredProcessOutput, call_next
from fedjax_like.core import CLIENTS, FederatedValue, federated_map, tree
from fedjax_like.data import pack_cohort

RESULTS = pathlib.Path(__file__).resolve().parent / 'RESULTS.md'
RAW = pathlib.Path(__file__).resolve().parent / 'results' / 'poisoning.json'
ATTACKS: dict[str, Callable[[Any], Any]] = {
    'none': lambda u: u,
    'scaled': lambda u: tree.scale(u, 100.0),
    'sign_flip': lambda u: tree.scale(u, -4.0),
    'nan': lambda u: jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), u),
}


class PoisonedUpdates:
  """Corrupts a random ``fraction`` of each round's cohort with ``attack`` before ``inner``.

  The attackers are drawn each round from a key in the state (``round(fraction * n)`` of the
  cohort's ``n`` clients, uniformly without replacement); measurements and result are the
  inner aggregator's.
  """

  def __init__(self, inner, attack: str, fraction: float = 0.2, seed: int = 0):
    if attack not in ATTACKS:
      raise ValueError(f'attack must be one of {sorted(ATTACKS)}; got {attack!r}.')
    self._inner, self._attack, self._fraction = inner, ATTACKS[attack], fraction
    self._seed = seed
    self.is_weighted = inner.is_weighted

  def create(self, value_type) -> AggregationProcess:
    inner = self._inner.create(value_type)
    corrupt, fraction = self._attack, self._fraction
    key = jax.random.key_data(jax.random.key(self._seed))

    def next_fn(state, value: FederatedValue, weight: FederatedValue | None = None):
      n = value.num_clients
      next_key, round_key = jax.random.split(state['key'])
      order = jax.random.permutation(round_key, n)
      attacker = jnp.zeros(n, bool).at[order[: round(fraction * n)]].set(True)
      flags = FederatedValue(attacker, CLIENTS, mask=value.mask, engine=value.engine)
      poisoned = federated_map(
          lambda u, bad: tree.where(bad, corrupt(u), u), (value, flags))
      out, _ = call_next(inner, state['inner'], poisoned, weight)
      return MeasuredProcessOutput({'inner': out.state, 'key': next_key}, out.result,
                                   out.measurements)

    return AggregationProcess(lambda: {'inner': inner.initialize(), 'key': key}, next_fn,
                              inner.value_type, inner.is_weighted, None, f'poisoned_{inner.name}')


def aggregators(cohort: int, attackers: int) -> list[tuple[str, Callable[[], Any]]]:
  """(name, factory builder) of every aggregator compared, all unweighted."""
  agg = fl.aggregators
  adaptive_median_norm = lambda: agg.PrivateQuantileEstimationProcess.no_noise(  # noqa: E731
      initial_estimate=1.0, target_quantile=0.5, learning_rate=1.0, multiplier=2.0)
  return [
      ('mean', agg.UnweightedMeanFactory),
      ('median', agg.MedianFactory),
      ('trimmed mean (0.2)', lambda: agg.TrimmedMeanFactory(0.2)),
      (f'Krum (f={attackers})', lambda: agg.KrumFactory(attackers)),
      (f'Multi-Krum (f={attackers}, m={cohort - attackers})',
       lambda: agg.KrumFactory(attackers, num_selected=cohort - attackers)),
      ('geometric median (RFA)', lambda: agg.GeometricMedianFactory(weighted=False)),
      ('zeroing (TFF default, adaptive)',
       lambda: fl.learning.robust_aggregator(clipping=False, weighted=False)),
      ('zeroing (2x median norm)',
       lambda: agg.zeroing_factory(adaptive_median_norm(), agg.UnweightedMeanFactory())),
      ('robust_aggregator (TFF)', lambda: fl.learning.robust_aggregator(weighted=False)),
  ]


class MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(10)(nn.relu(nn.Dense(64)(x)))


class Logistic(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(10)(x)


def load_task(num_clients: int, alpha: float, batch: int):
  """``(client ids, train sets, test sets)`` of the offline digits, flattened pixels."""
  train, test = fl.data.digits.load_data(num_clients=num_clients, alpha=alpha, seed=0)

  def client(source, client_id, seed):
    dataset = source.dataset_for_client(client_id).map(
        lambda e: ((1.0 - e['pixels']).reshape(-1), e['label']))
    return dataset.shuffle(seed=seed).batch(batch) if seed is not None else dataset.batch(batch)

  ids = train.client_ids
  return (ids, [client(train, c, seed=i) for i, c in enumerate(ids)],
          [client(test, c, seed=None) for c in ids])


def run(*, rounds: int, num_clients: int = 50, alpha: float = 1.0, cohort: int = 20,
        batch: int = 16, client_lr: float = 0.1, model: str = 'mlp',
        attacks=('none', 'scaled', 'sign_flip', 'nan'), pairs=None, log=print) -> dict:
  """Trains every (aggregator, attack) pair (or only ``pairs``, a list of such names); returns
  ``{aggregator: {attack: accuracy}}`` and the seconds per round in ``['_seconds']``."""
  ids, train_sets, test_sets = load_task(num_clients, alpha, batch)
  spec = (jax.ShapeDtypeStruct((784,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
  flax_model = MLP() if model == 'mlp' else Logistic()
  fl_model = fl.models.from_linen(flax_model, spec)
  max_steps = max(d.num_batches for d in train_sets)
  sampler = np.random.default_rng(0)
  cohorts = [sorted(sampler.choice(len(ids), cohort, replace=False)) for _ in range(rounds)]
  packed = [pack_cohort([train_sets[i] for i in c], num_steps=max_steps) for c in cohorts]
  test_cohort = pack_cohort(test_sets)
  evaluation = fl.learning.algorithms.build_fed_eval(fl_model)
  attackers = round(0.2 * cohort)
  results: dict = {'_seconds': {}}
  for name, make in aggregators(cohort, attackers):
    for attack in attacks:
      if pairs is not None and (name, attack) not in pairs:
        continue
      start = time.perf_counter()
      process = fl.learning.algorithms.build_unweighted_fed_avg(
          fl_model, fl.learning.optimizers.build_sgdm(client_lr),
          model_aggregator=PoisonedUpdates(make(), attack, seed=1))
      state = process.initialize()
      for r in range(rounds):
        state, _ = process.next(state, packed[r])
      weights = process.get_model_weights(state)
      eval_state = evaluation.set_model_weights(evaluation.initialize(), weights)
      _, eval_metrics = evaluation.next(eval_state, test_cohort)
      accuracy = float(eval_metrics['client_work']['eval']['current_round_metrics']['accuracy'])
      results.setdefault(name, {})[attack] = accuracy
      seconds = time.perf_counter() - start
      results['_seconds'].setdefault(name, []).append(seconds / rounds)
      log(f'  {name} / {attack}: accuracy {accuracy:.3f} ({seconds:.1f} s)')
  return results


def table(results: dict, attacks) -> str:
  """Accuracy per aggregator and attack, and under which attacks it stays within 5 points of
  the clean plain mean and of its own clean run."""
  clean = results['mean']['none']
  head = ['aggregator'] + list(attacks) + ['within 5 points of the clean mean',
                                            'within 5 points of its own clean run']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  attacked = [a for a in attacks if a != 'none']

  def verdict(row, reference):
    holds = [a for a in attacked if row[a] >= reference - 0.05]
    return 'all' if len(holds) == len(attacked) else (', '.join(f'`{a}`' for a in holds) or 'none')

  for name, row in results.items():
    if name.startswith('_'):
      continue
    cells = [name] + [f'{row[a]:.3f}' for a in attacks]
    cells += [verdict(row, clean), verdict(row, row['none'])]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


READING = """\
- The plain mean leaves non-finite updates out (weight 0, counted in `num_clients_non_finite`), as
  TFF's client work does, so NaN updates do not hurt it; 100x and -4x updates ruin it.
- TFF's adaptive zeroing (`robust_aggregator`'s) tracks the 0.98 quantile of the clients' L-inf
  norms and zeroes above `2 Z + 1`: with 20% of each cohort attacking, that quantile is an
  attacker's norm, so the threshold climbs above the attackers within a few rounds and lets them
  through. Zeroing at twice the median norm (an adaptive `zeroing_factory` with target quantile
  0.5, multiplier 2) zeroes them. `robust_aggregator`'s adaptive clipping (0.8 quantile) bounds a
  100x update but not the -4x one, whose norm is only 4x an honest one.
- Krum keeps one client's update per round: on label-skewed clients it trails the mean even
  without attack (its clean run is the column to compare it with); Multi-Krum averages the 16 best
  and keeps up. The coordinate-wise median also costs some accuracy on skewed clients."""


def describe(args: dict) -> str:
  model = 'MLP 784-64-10' if args['model'] == 'mlp' else 'logistic'
  return (
      f'Unweighted FedAvg on the offline digits: {args["clients"]} clients (Dirichlet alpha '
      f'{args["alpha"]}), {model} model, {args["cohort"]} clients per round (the same seeded '
      f'cohorts for every run), {args["rounds"]} rounds, one local epoch of batch-16 SGD 0.1, '
      f'server SGD 1.0. Each round a random 20% of the cohort ({round(0.2 * args["cohort"])} '
      'clients) replaces its update u by `100 u` (scaled), `-4 u` (sign_flip: cancels the honest '
      '80% in the plain mean) or NaN (nan), through an aggregator wrapper '
      '(`benchmarks/poisoning.py`). Cells: test accuracy of the final model (federated '
      'evaluation over every client\'s held-out split); the last two columns list the attacks '
      'under which the aggregator stays within 5 points of the clean plain mean (`mean` / '
      '`none`) and of its own clean run. Raw results: `benchmarks/results/poisoning.json` '
      '(`--from-json` redoes this section from them).')


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rounds', type=int, default=40)
  parser.add_argument('--clients', type=int, default=50)
  parser.add_argument('--alpha', type=float, default=1.0)
  parser.add_argument('--cohort', type=int, default=20)
  parser.add_argument('--model', choices=['mlp', 'logistic'], default='mlp')
  parser.add_argument('--no-write', action='store_true',
                      help='print only (RESULTS.md untouched; raw results only to --raw if given)')
  parser.add_argument('--raw', default=None,
                      help=f'where the raw results go (default {RAW.name} beside the others)')
  parser.add_argument('--from-json', action='store_true',
                      help=f'redo the report from the raw results of the last run ({RAW.name})')
  args = parser.parse_args(argv)
  attacks = ('none', 'scaled', 'sign_flip', 'nan')
  start = time.perf_counter()
  if args.from_json:
    results = json.loads(RAW.read_text())
  else:
    results = run(rounds=args.rounds, num_clients=args.clients, alpha=args.alpha,
                  cohort=args.cohort, model=args.model, attacks=attacks,
                  log=lambda s: print(s, file=sys.stderr))
    command = 'python -m benchmarks.poisoning' + ' '.join([''] + (argv or sys.argv[1:]))
    results['_run'] = {
        'args': vars(args),
        'environment': environment(command)
        + f'\n- total wall time: {time.perf_counter() - start:.0f} s',
    }
    if args.raw or not args.no_write:
      pathlib.Path(args.raw or RAW).write_text(json.dumps(results, indent=1) + '\n')
  markdown = table(results, attacks)
  print(markdown)
  report = '\n\n'.join([
      '## 4. Aggregators under poisoning (`python -m benchmarks.poisoning`)',
      describe(results['_run']['args']),
      markdown,
      READING,
      results['_run']['environment'],
  ]) + '\n'
  if not args.no_write:
    write_section(RESULTS, '## 4. Aggregators under poisoning', report)


if __name__ == '__main__':
  main()
