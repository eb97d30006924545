"""The training loop: the result of a plain loop, exact resume, writers, refusal to mix runs."""

import csv
import glob
import os
import struct

import jax
import numpy as np
import pytest

import fedjax_like as fl
from fedjax_like.data.packing import PADDING_CLIENT_ID
from fedjax_like.data.sampling import PoissonSampler, UniformSampler
from fedjax_like.simulation.checkpoint import Checkpointer
from fedjax_like.simulation.cohorts import ClientPreprocess, pack_round
from fedjax_like.simulation.evaluation import FederatedEvaluation
from fedjax_like.simulation.loop import EmptyCohortError, ResumeError, run_training_process
from fedjax_like.simulation.writers import CsvWriter, CurvePlot, TensorBoardWriter


def _setup(digits_data, dropout_model, seed=0):
  train, _ = digits_data
  sampler = UniformSampler(train.client_ids, cohort_size=5, seed=seed)
  preprocess = ClientPreprocess.for_model(dropout_model, batch_size=10, num_epochs=2, seed=seed)
  return train, sampler, preprocess


def _assert_same_bits(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(leaves_a, leaves_b, strict=True):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    assert x.tobytes() == y.tobytes()


def _without_time(history):
  return [{k: v for k, v in r.items() if k != 'elapsed_s'} for r in history]


class _Interrupt(Exception):
  pass


class _InterruptAt:
  """A writer that stops the run (as a crash would) when a round's record arrives."""

  def __init__(self, round_num):
    self.round_num = round_num

  def start(self, start_round, history):
    pass

  def write(self, record):
    if record['round'] == self.round_num:
      raise _Interrupt()

  def close(self):
    pass


def test_loop_gives_the_state_of_a_plain_loop(digits_data, dropout_model, dropout_process):
  train, sampler, preprocess = _setup(digits_data, dropout_model)
  result = run_training_process(
      dropout_process, train, sampler, 4, client_preprocess=preprocess, progress='none'
  )
  state = dropout_process.initialize()
  for r in range(1, 5):
    state = dropout_process.next(state, pack_round(train, sampler.sample(r), r, preprocess)).state
  _assert_same_bits(result.state, state)
  assert [r['round'] for r in result.history] == [1, 2, 3, 4]
  assert all(r['num_clients'] == 5 for r in result.history)
  assert 0 <= result.history[-1]['client_work/train/accuracy'] <= 1


def test_interrupted_run_resumes_bit_exactly(tmp_path, digits_data, dropout_model, dropout_process):
  train, sampler, preprocess = _setup(digits_data, dropout_model)
  common = dict(client_preprocess=preprocess, checkpoint_every=2, progress='none')

  reference = run_training_process(
      dropout_process, train, sampler, 6, checkpoint_dir=str(tmp_path / 'a'), **common
  )
  csv_path = tmp_path / 'b.csv'
  with pytest.raises(_Interrupt):
    run_training_process(
        dropout_process,
        train,
        sampler,
        6,
        checkpoint_dir=str(tmp_path / 'b'),
        metrics_writers=[CsvWriter(csv_path), _InterruptAt(5)],
        **common,
    )
  assert Checkpointer(tmp_path / 'b').latest_round() == 4
  with open(csv_path) as f:
    assert [int(r['round']) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5]

  resumed = run_training_process(
      dropout_process,
      train,
      sampler,
      6,
      checkpoint_dir=str(tmp_path / 'b'),
      metrics_writers=[CsvWriter(csv_path)],
      **common,
  )
  assert resumed.start_round == 4 and resumed.last_round == 6
  _assert_same_bits(resumed.state, reference.state)
  assert _without_time(resumed.history) == _without_time(reference.history)
  with open(csv_path) as f:
    rows = list(csv.DictReader(f))
  assert [int(r['round']) for r in rows] == [1, 2, 3, 4, 5, 6]  # round 5 is not there twice
  assert (
      float(rows[-1]['client_work/train/loss']) == reference.history[-1]['client_work/train/loss']
  )
  assert resumed.checkpoint_rounds == [2, 4, 6]


def test_a_half_written_checkpoint_is_never_the_latest(
    tmp_path, digits_data, dropout_model, dropout_process
):
  train, sampler, preprocess = _setup(digits_data, dropout_model)
  directory = tmp_path / 'ckpt'
  common = dict(client_preprocess=preprocess, checkpoint_dir=str(directory), progress='none')
  run_training_process(dropout_process, train, sampler, 2, **common)
  # What a process killed while writing round 4 leaves behind: a temporary directory, not renamed.
  partial = directory / '4.orbax-checkpoint-tmp-1234567890'
  (partial / 'state').mkdir(parents=True)
  (partial / 'state' / 'garbage').write_bytes(b'\0' * 100)
  assert Checkpointer(directory).latest_round() == 2
  assert not partial.exists()  # cleaned up when the checkpoints are opened again
  result = run_training_process(dropout_process, train, sampler, 3, **common)
  assert result.start_round == 2 and result.checkpoint_rounds == [2, 3]


def test_resuming_with_another_sampler_or_run_refuses(
    tmp_path, digits_data, dropout_model, dropout_process
):
  train, sampler, preprocess = _setup(digits_data, dropout_model)
  common = dict(client_preprocess=preprocess, checkpoint_dir=str(tmp_path), progress='none')
  run_training_process(dropout_process, train, sampler, 1, run_info={'seed': 0}, **common)
  other = UniformSampler(train.client_ids, cohort_size=5, seed=1)
  with pytest.raises(ResumeError, match='client sampler'):
    run_training_process(dropout_process, train, other, 2, run_info={'seed': 0}, **common)
  with pytest.raises(ResumeError, match=r"\['seed'\] differ"):
    run_training_process(dropout_process, train, sampler, 2, run_info={'seed': 1}, **common)


def _tensorboard_scalars(logdir):
  from tensorboardX.proto import event_pb2

  scalars = {}
  for path in glob.glob(os.path.join(logdir, 'events.out.tfevents.*')):
    data = open(path, 'rb').read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack('<Q', data[pos : pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
      pos += 12 + length + 4
      for value in event.summary.value:
        scalars.setdefault(value.tag, {})[event.step] = value.simple_value
  return scalars


def test_writers_csv_tensorboard_and_plot(tmp_path, digits_data, dropout_model, dropout_process):
  train, sampler, preprocess = _setup(digits_data, dropout_model)
  evaluation = FederatedEvaluation(dropout_model, digits_data[1], batch_size=50)
  writers = [
      CsvWriter(tmp_path / 'metrics.csv'),
      TensorBoardWriter(tmp_path / 'tb'),
      CurvePlot(tmp_path / 'curves.png', title='test'),
  ]
  result = run_training_process(
      dropout_process,
      train,
      sampler,
      3,
      client_preprocess=preprocess,
      evaluation=evaluation,
      eval_every=2,
      metrics_writers=writers,
      progress='none',
  )
  with open(tmp_path / 'metrics.csv') as f:
    reader = csv.DictReader(f)
    rows = list(reader)
  columns = reader.fieldnames
  assert columns[:3] == ['round', 'num_clients', 'elapsed_s']
  for name in [
      'client_work/train/accuracy',
      'client_work/train/loss',
      'client_work/train/num_examples',
      'eval/accuracy',
      'eval/loss',
      'eval/num_examples',
  ]:
    assert name in columns
  assert [r['round'] for r in rows] == ['1', '2', '3']
  assert rows[0]['eval/accuracy'] == '' and rows[1]['eval/accuracy'] and rows[2]['eval/accuracy']
  assert int(rows[1]['eval/num_examples']) == evaluation.num_examples

  scalars = _tensorboard_scalars(tmp_path / 'tb')
  assert sorted(scalars['client_work/train/accuracy']) == [1, 2, 3]
  assert sorted(scalars['eval/accuracy']) == [2, 3]
  np.testing.assert_allclose(
      scalars['eval/accuracy'][3], result.history[-1]['eval/accuracy'], rtol=1e-6
  )
  png = (tmp_path / 'curves.png').read_bytes()
  assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 5000


def test_progress_modes_are_quiet_off_a_terminal(
    capsys, digits_data, dropout_model, dropout_process
):
  from fedjax_like.simulation.progress import Progress

  assert Progress(3, mode='auto').mode == 'log'  # pytest's stderr is not a terminal
  train, sampler, preprocess = _setup(digits_data, dropout_model)
  evaluation = FederatedEvaluation(dropout_model, digits_data[1], batch_size=50)
  run_training_process(
      dropout_process,
      train,
      sampler,
      2,
      client_preprocess=preprocess,
      evaluation=evaluation,
      eval_every=2,
      progress='log',
  )
  err = capsys.readouterr().err
  assert 'round 2/2' in err and 'clients/s' in err and 'eval accuracy' in err
  assert f'JAX {jax.__version__} on cpu' in err and 'execution sequential (auto)' in err


def test_auto_progress_is_a_bar_in_a_notebook(monkeypatch):
  from fedjax_like.simulation import progress

  monkeypatch.setattr(progress, 'in_notebook', lambda: True)
  bar = progress.Progress(3, mode='auto')
  assert bar.mode == 'bar'
  bar.close()


def test_stateful_clients_resume_exactly_from_a_checkpoint(tmp_path):
  """SCAFFOLD keeps control variates per client on the host: they are checkpointed too."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np

  import fedjax_like as fl
  from fedjax_like.data import ClientData
  from fedjax_like.data.sampling import UniformSampler
  from fedjax_like.simulation import run_training_process

  spec = (jax.ShapeDtypeStruct((3,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
  rng = np.random.default_rng(0)
  data = ClientData.from_clients_dict({
      f'c{i}': (rng.normal(size=(6, 3)).astype(np.float32), rng.integers(0, 2, 6).astype(np.int32))
      for i in range(6)
  })

  def run(num_rounds, checkpoint_dir):
    process = fl.learning.algorithms.build_scaffold(
        fl.models.from_linen(nn.Dense(2), spec), client_learning_rate=0.1, num_total_clients=6
    )
    return run_training_process(
        process, data, UniformSampler(data.client_ids, 2, seed=0), num_rounds,
        checkpoint_dir=checkpoint_dir, checkpoint_every=1, progress='none',
    ).state

  straight = run(4, None)
  run(2, str(tmp_path / 'ckpt'))  # interrupted after round 2 ...
  resumed = run(4, str(tmp_path / 'ckpt'))  # ... and resumed from its checkpoint
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  store_a, store_b = straight.client_work.clients, resumed.client_work.clients
  assert store_a.client_ids == store_b.client_ids and len(store_a) >= 2


def test_poisson_cohorts_are_padded_and_padding_changes_nothing(digits_data):
  train, _ = digits_data
  model = fl.models.zoo.create_model('logistic', 10)
  process = fl.learning.algorithms.build_unweighted_fed_avg(
      model, fl.learning.optimizers.build_sgdm(0.1), runtime=fl.Runtime('sequential'))
  def padded(seed):  # round 1 draws a size off the ladder 1, 2, 3, 4, 6, 8, 12, ...
    n = len(PoissonSampler(train.client_ids, 0.2, seed).sample(1))
    return PoissonSampler(train.client_ids, 0.2, seed).padded_size(n) > n

  sampler = PoissonSampler(train.client_ids, 0.2, seed=next(filter(padded, range(100))))
  preprocess = ClientPreprocess.for_model(model, batch_size=20, seed=2)
  cohorts = []
  real_next = process.next

  def spy(state, cohort):
    cohorts.append(cohort)
    return real_next(state, cohort)

  process.next = spy
  result = run_training_process(process, train, sampler, 2, client_preprocess=preprocess,
                                progress='none')
  state = process.initialize()
  for round_num, cohort in enumerate(cohorts, start=1):
    ids = sampler.sample(round_num)
    assert cohort.client_ids == tuple(ids) + (PADDING_CLIENT_ID,) * (
        sampler.padded_size(len(ids)) - len(ids))
    assert result.history[round_num - 1]['num_clients'] == len(ids)
    state = real_next(state, pack_round(train, ids, round_num, preprocess)).state  # unpadded
  assert any(PADDING_CLIENT_ID in c.client_ids for c in cohorts)  # padding happened
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(result.state), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_an_empty_draw_stops_the_run_naming_the_round(digits_data, dropout_process):
  train, _ = digits_data
  samplers = (PoissonSampler(train.client_ids, 0.01, seed) for seed in range(99))
  sampler = next(s for s in samplers if not s.sample(1))  # (1 - q)^30 = 0.74: the first, likely
  message = r'Round 1: .*PoissonSampler drew no clients .*q = 0.01'
  with pytest.raises(EmptyCohortError, match=message):
    run_training_process(dropout_process, train, sampler, 1, progress='none')


def test_a_privacy_accountant_for_another_sampling_is_refused(digits_data, dropout_process):
  accounting = pytest.importorskip('fedjax_like.learning.privacy_accounting')
  pytest.importorskip('dp_accounting')
  train, _ = digits_data
  accountant = accounting.PrivacyAccountant(
      1.0, accounting.Sampling('poisson', len(train.client_ids), 5), 1e-5)
  with pytest.raises(accounting.SamplerMismatchError, match='UniformSampler'):
    run_training_process(dropout_process, train, UniformSampler(train.client_ids, 5), 1,
                         progress='none', privacy_accountant=accountant)

def test_a_writer_needs_only_write(digits_data, dropout_model, dropout_process):
  train, sampler, preprocess = _setup(digits_data, dropout_model)

  class OnlyWrite:
    def __init__(self):
      self.rounds = []

    def write(self, record):
      self.rounds.append(record['round'])

  writer = OnlyWrite()
  run_training_process(
      dropout_process, train, sampler, 1, client_preprocess=preprocess, metrics_writers=[writer]
  )
  assert writer.rounds == [1]
  with pytest.raises(TypeError, match=r'no callable write\(\)'):
    run_training_process(dropout_process, train, sampler, 1, metrics_writers=[print])


def test_a_damaged_client_stops_the_run_after_checkpointing_the_last_round(
    tmp_path, digits_data, dropout_model, dropout_process
):
  from fedjax_like.data import ClientData
  from fedjax_like.data.sampling import FixedSampler
  from fedjax_like.simulation.cohorts import ClientDataError

  train, _, preprocess = _setup(digits_data, dropout_model)
  good = train.client_ids[:5]  # cohorts of 5, as the other tests here: their compiled round

  def load(client_id):
    if client_id == 'damaged':
      raise ValueError('record 3 of client damaged: truncated tf.train.Example')
    return train.dataset_for_client(client_id).elements

  data = ClientData.from_loader([*good, 'damaged'], load)

  kwargs = dict(client_preprocess=preprocess, checkpoint_dir=str(tmp_path), checkpoint_every=10)
  sampler = FixedSampler([good, good, ['damaged', *good[1:]], good])  # first sampled in round 3
  with pytest.raises(ClientDataError) as info:
    run_training_process(dropout_process, data, sampler, 5, **kwargs)
  message = str(info.value)
  assert "Round 3: the data of client 'damaged'" in message and 'truncated' in message
  assert 'state after round 2 is checkpointed' in message
  assert Checkpointer(tmp_path).all_rounds() == [2]
  assert not [p for p in os.listdir(tmp_path) if 'tmp' in p]


def test_a_failed_plot_or_csv_write_leaves_no_temporary_file(tmp_path, monkeypatch):
  import errno

  from matplotlib.figure import Figure

  from fedjax_like.simulation import writers

  def full_disk(self, name, **kwargs):
    with open(name, 'wb') as f:
      f.write(b'\x89PNG partial')
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(Figure, 'savefig', full_disk)
  history = [{'round': 1, 'client_work/train/accuracy': 0.5}]
  with pytest.raises(OSError, match='No space left'):
    writers.plot_curves(history, tmp_path / 'curves.png')

  def full_fsync(fd):
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(os, 'fsync', full_fsync)
  with pytest.raises(OSError, match='No space left'):
    writers.CsvWriter(tmp_path / 'metrics.csv').start(0, [])
  assert os.listdir(tmp_path) == []
