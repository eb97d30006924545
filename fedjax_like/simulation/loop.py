"""The training loop: sample, pack, run a round, evaluate, log, checkpoint; resumable and exact.

:func:`run_training_process` drives any :class:`~fedjax_like.learning.LearningProcess` for
``num_rounds`` rounds. Round ``r`` (1-based):

1. ``client_sampler.sample(r)`` picks the cohort (a pure function of the seed and ``r``);
2. :class:`~fedjax_like.simulation.cohorts.RoundCohort` makes their batches on the host (shuffles
   seeded by run seed, round and client) as the runtime packs them, block by block (or chunk by
   chunk for a cohort larger than host memory); a sampler whose
   cohorts vary in size (``PoissonSampler``, with ``padded_size``) has each cohort padded with
   masked, empty clients to a size on a short ladder, so a few compiled programs serve every
   round (not for algorithms with per-client state, whose stores are keyed by client id);
3. ``process.next(state, cohort)`` dispatches the round to the device and returns at once;
4. only then is round ``r - 1``'s record read back (a one-round lag), so packing round ``r + 1``
   and logging overlap the device's work on round ``r`` (JAX dispatch is asynchronous);
5. every ``eval_every`` rounds (and at the last) ``evaluation(weights)`` runs on the new weights;
6. every ``checkpoint_every`` rounds (and at the last) the state is saved with its round, the
   sampler's description and the metrics history.

With a ``privacy_accountant`` (:class:`~fedjax_like.learning.privacy_accounting.PrivacyAccountant`,
checked against the sampler before the first round), each round's record holds
``privacy/epsilon``: the epsilon spent after that many rounds at the accountant's delta.

Resuming: with a ``checkpoint_dir`` holding a committed checkpoint, the loop restores the latest one
and continues from the round after it. Everything random is a function of the seed and the round
(the sampler, the shuffles) or is in the saved state (the process's keys), so an interrupted and
resumed run ends with the same weights, bit for bit on CPU, as one that was never interrupted.

Failures: a sampled client whose data cannot be read or prepared
(:class:`~fedjax_like.simulation.cohorts.ClientDataError`) stops the run after checkpointing its
last completed round, so nothing done is lost; a checkpoint that cannot be written raises
:class:`~fedjax_like.simulation.checkpoint.CheckpointWriteError`. On every path the writers, the
progress bar and the checkpointer are closed (their own errors never hide the run's), and no
temporary file is left behind. The first round prints the backend, devices and execution strategy
(:func:`~fedjax_like.simulation.progress.execution_summary`) unless progress is ``'none'``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from fedjax_like.data.client_data import ClientData
from fedjax_like.data.dataset import BatchedDataset, Dataset
from fedjax_like.data.sampling import ClientSampler
from fedjax_like.learning.process import LearningAlgorithmState, LearningProcess
from fedjax_like.simulation.checkpoint import Checkpointer
from fedjax_like.simulation.cohorts import ClientDataError, ClientPreprocess, RoundCohort
from fedjax_like.simulation.progress import Progress, execution_summary
from fedjax_like.simulation.writers import MetricWriter, check_writer

PyTree = Any
Record = dict[str, float]


@dataclasses.dataclass
class TrainingResult:
  """What a run ends with.

  Attributes:
    state: the final server state.
    history: one record per round, rounds 1..last (restored ones included).
    start_round: rounds already done when this call began (0, or the checkpoint resumed from).
    last_round: the round ``state`` is after.
    checkpoint_rounds: rounds with a committed checkpoint on disk at the end.
  """

  state: LearningAlgorithmState
  history: list[Record]
  start_round: int
  last_round: int
  checkpoint_rounds: list[int]


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = '') -> Record:
  """Nested metrics (host values) as ``{'client_work/train/accuracy': 0.9, ...}``; scalars only."""
  flat: Record = {}
  for name, value in metrics.items():
    key = f'{prefix}{name}'
    if isinstance(value, Mapping):
      flat.update(flatten_metrics(value, key + '/'))
    elif np.ndim(value) == 0:
      value = np.asarray(value)
      flat[key] = int(value) if np.issubdtype(value.dtype, np.integer) else float(value)
  return flat


class ResumeError(ValueError):
  """A checkpoint to resume from belongs to a different run (sampler or run_info differ)."""


class EmptyCohortError(ValueError):
  """The client sampler drew no client for a round (possible with Poisson sampling)."""


def _empty_cohort(sampler: ClientSampler, round_num: int) -> EmptyCohortError:
  chance = ''
  q, n = getattr(sampler, 'sampling_probability', None), getattr(sampler, 'num_clients', None)
  if q is not None and n is not None:
    chance = f' (probability (1 - q)^N = {(1 - q) ** n:.3g} a round for q = {q:g}, N = {n})'
  return EmptyCohortError(
      f'Round {round_num}: the client sampler {type(sampler).__name__} drew no clients'
      f'{chance}. A round needs at least one client: raise the sampling probability '
      '(clients per round) or use another seed.'
  )


@dataclasses.dataclass
class _Pending:
  """A dispatched round whose metrics are still on the device."""

  round_num: int
  num_clients: int
  metrics: PyTree
  eval_metrics: PyTree | None


def _check_resume(meta: Mapping[str, Any], sampler: ClientSampler, run_info, where: str) -> None:
  saved_info = meta.get('run_info')
  if run_info is not None and saved_info != run_info:
    saved_info = saved_info or {}
    differing = sorted(
        k for k in set(saved_info) | set(run_info) if saved_info.get(k) != run_info.get(k)
    )
    saved = [saved_info.get(k) for k in differing]
    now = [run_info.get(k) for k in differing]
    raise ResumeError(
        f'The checkpoint in {where} belongs to a different run: {differing} differ '
        f'(saved {saved}, now {now}).'
    )
  saved_sampler = meta.get('sampler')
  if saved_sampler != sampler.state():
    raise ResumeError(
        f'The checkpoint in {where} was made with client sampler {saved_sampler}, but this run '
        f'samples with {sampler.state()}. Resume with the same sampler (seed, cohort size, '
        'clients).'
    )


def _close_all(bar, writers, checkpointer, quiet: bool) -> None:
  """Closes the progress bar, the writers and the checkpointer, each even if another fails. With
  ``quiet`` (a run already failing) their errors are dropped, so the run's own error is reported;
  otherwise the first is raised once all are closed."""
  first = None
  closers = [bar.close] + [w.close for w in writers if hasattr(w, 'close')]
  if checkpointer is not None:
    closers.append(checkpointer.close)
  for close in closers:
    try:
      close()
    except Exception as e:  # noqa: BLE001 - closed in order, the first error reported below
      first = first or e
  if first is not None and not quiet:
    raise first


def run_training_process(
    process: LearningProcess,
    train_data: ClientData,
    client_sampler: ClientSampler,
    num_rounds: int,
    *,
    client_preprocess: Callable[[Dataset, int], BatchedDataset] | None = None,
    evaluation: Callable[[PyTree], Mapping[str, Any]] | None = None,
    eval_every: int = 1,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 0,
    keep_checkpoints: int = 3,
    metrics_writers: Sequence[MetricWriter] = (),
    progress: str = 'auto',
    initial_state: LearningAlgorithmState | None = None,
    run_info: Mapping[str, Any] | None = None,
    privacy_accountant=None,
) -> TrainingResult:
  """Trains ``process`` for rounds ``start+1 .. num_rounds``, resuming from a checkpoint if any.

  Args:
    process: a learning process (``initialize``/``next``/``get_model_weights``).
    train_data: the training clients.
    client_sampler: picks each round's client ids (``sample(round_num)``; see
      :mod:`fedjax_like.data.sampling`).
    num_rounds: the round to stop after.
    client_preprocess: ``(dataset, round_num) -> batches`` for one client; default
      ``ClientPreprocess.for_model(process.model)`` (EMNIST-style examples, 1 epoch, batch 20).
    evaluation: ``weights -> {metric: value}`` (e.g.
      :class:`~fedjax_like.simulation.evaluation.FederatedEvaluation`); logged as ``eval/<metric>``.
    eval_every: evaluate every this many rounds and at the last (0: never).
    checkpoint_dir: where checkpoints go (and are resumed from); None: no checkpoints.
    checkpoint_every: checkpoint every this many rounds and at the last (0: only at the last).
    keep_checkpoints: how many of the newest checkpoints to keep.
    metrics_writers: objects with ``write(record)``, given each round's record (optionally
      ``start(start_round, history)`` and ``close()``; see :mod:`.writers`).
    progress: ``'auto'``, ``'bar'``, ``'log'`` or ``'none'`` (see :mod:`.progress`).
    initial_state: the state to start from when there is no checkpoint (default
      ``process.initialize()``); also the template a checkpoint is restored into.
    run_info: JSON-able facts about the run (seed, config) saved with each checkpoint; resuming
      from a checkpoint whose ``run_info`` differs raises instead of mixing two runs.
    privacy_accountant: a :class:`~fedjax_like.learning.privacy_accounting.PrivacyAccountant`
      for the process's DP aggregator and ``client_sampler`` (a mismatch raises before the
      first round); adds ``privacy/epsilon`` to every round's record.

  Returns:
    A :class:`TrainingResult`.
  """
  if not isinstance(num_rounds, (int, np.integer)) or num_rounds < 0:
    raise ValueError(f'num_rounds must be a non-negative integer; got {num_rounds!r}.')
  writers = list(metrics_writers)
  for writer in writers:
    check_writer(writer)
  if client_preprocess is None:
    client_preprocess = ClientPreprocess.for_model(process.model)
  run_info = dict(run_info) if run_info is not None else None
  if privacy_accountant is not None:
    privacy_accountant.check_sampler(client_sampler)
  padded_size = getattr(client_sampler, 'padded_size', None)
  if getattr(process, 'stateful_clients', False):
    padded_size = None  # per-client stores are keyed by id: no padding clients
  state = initial_state if initial_state is not None else process.initialize()
  history: list[Record] = []
  start_round = 0
  checkpointer = None
  if checkpoint_dir is not None:
    checkpointer = Checkpointer(checkpoint_dir, max_to_keep=keep_checkpoints)
    if checkpointer.latest_round() is not None:
      state, meta = checkpointer.restore(state)
      _check_resume(meta, client_sampler, run_info, checkpointer.directory)
      start_round = int(meta['round'])
      history = [dict(r) for r in meta.get('history', [])]

  elapsed_before = history[-1].get('elapsed_s', 0.0) if history else 0.0
  started = time.perf_counter()
  for writer in writers:
    if hasattr(writer, 'start'):
      writer.start(start_round, history)
  bar = Progress(num_rounds, start_round, progress)

  def finish(pending: _Pending) -> None:
    metrics, eval_metrics = jax.device_get((pending.metrics, pending.eval_metrics))
    record: Record = {
        'round': pending.round_num,
        'num_clients': pending.num_clients,
        'elapsed_s': round(elapsed_before + time.perf_counter() - started, 3),
    }
    record.update(flatten_metrics(metrics))
    if privacy_accountant is not None:
      record['privacy/epsilon'] = privacy_accountant.epsilon(pending.round_num)
    if eval_metrics is not None:
      record.update(flatten_metrics(eval_metrics, 'eval/'))
    history.append(record)
    for writer in writers:
      writer.write(record)
    bar.update(record)

  def due(round_num: int, every: int) -> bool:
    return round_num == num_rounds or (every > 0 and round_num % every == 0)

  def save(round_num: int) -> None:
    meta = {'sampler': client_sampler.state(), 'run_info': run_info, 'history': history}
    checkpointer.save(round_num, state, meta)

  pending, saved_round, completed = None, start_round, start_round
  try:
    for round_num in range(start_round + 1, num_rounds + 1):
      client_ids = client_sampler.sample(round_num)
      if not client_ids:
        raise _empty_cohort(client_sampler, round_num)
      if round_num == start_round + 1:
        bar.header(execution_summary(process, len(client_ids)))
      try:
        padding = 0 if padded_size is None else padded_size(len(client_ids)) - len(client_ids)
        cohort = RoundCohort(train_data, client_ids, round_num, client_preprocess, process.model,
                             num_padding=padding)
        output = process.next(state, cohort)
      except ClientDataError as e:
        # Keep the rounds done so far: checkpoint the last completed one before stopping.
        if pending is not None:
          finish(pending)
          pending = None
        if checkpointer is not None and completed > saved_round:
          save(completed)
          saved_round = completed
        where = f' (in {checkpointer.directory})' if checkpointer is not None else ''
        e.args = (
            f'{e} The run stopped before round {round_num}; '
            + (f'its state after round {saved_round} is checkpointed{where}: fix or exclude '
               'the client and run again to resume from there.'
               if checkpointer is not None and saved_round > 0 else 'nothing was checkpointed.'),
        )
        raise
      if pending is not None:
        finish(pending)
      state = output.state
      eval_metrics = None
      if evaluation is not None and eval_every > 0 and due(round_num, eval_every):
        eval_metrics = evaluation(process.get_model_weights(state))
      pending = _Pending(round_num, len(client_ids), output.metrics, eval_metrics)
      completed = round_num
      if checkpointer is not None and due(round_num, checkpoint_every):
        finish(pending)
        pending = None
        save(round_num)
        saved_round = round_num
    if pending is not None:
      finish(pending)
  except BaseException:
    _close_all(bar, writers, checkpointer, quiet=True)  # the run's own error is the one raised
    raise
  rounds = checkpointer.all_rounds() if checkpointer is not None else []
  _close_all(bar, writers, checkpointer, quiet=False)
  last_round = max(start_round, num_rounds)
  return TrainingResult(state, history, start_round, last_round, rounds)
