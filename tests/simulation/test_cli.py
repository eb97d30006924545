"""The command line: a real short run with all its outputs, resume, --help, and early failures."""

import csv
import json
import pathlib

import pytest

from fedjax_like.simulation import cli, config

ROOT = pathlib.Path(__file__).resolve().parents[2]
DIGITS = str(ROOT / 'fedjax_like' / 'configs' / 'digits.toml')


def _train(capsys, *args):
  status = cli.main(['train', *args])
  out, err = capsys.readouterr()
  return status, out, err


def _short(root, *extra):
  return [
      '--config',
      DIGITS,
      '--output.root',
      str(root),
      '--training.num_rounds',
      '3',
      '--training.clients_per_round',
      '5',
      '--evaluation.every',
      '2',
      '--output.checkpoint_every',
      '2',
      *extra,
  ]


def test_train_writes_every_output_and_resumes(tmp_path, capsys):
  status, out, _ = _train(capsys, *_short(tmp_path))
  assert status == 0
  run = tmp_path / 'digits_fedavg'
  for name in ('config.json', 'metrics.csv', 'curves.png', 'summary.json'):
    assert (run / name).is_file(), name
    assert str(run / name) in out  # the summary says where everything is
  assert list((run / 'tensorboard').glob('events.out.tfevents.*'))
  assert sorted(p.name for p in (run / 'checkpoints').iterdir()) == ['2', '3']
  assert "Run 'digits_fedavg': 3 rounds" in out and 'eval accuracy' in out

  with open(run / 'metrics.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['round'] for r in rows] == ['1', '2', '3'] and rows[2]['eval/accuracy']
  summary = json.loads((run / 'summary.json').read_text())
  assert summary['rounds'] == 3 and summary['checkpoint_rounds'] == [2, 3]
  saved = json.loads((run / 'config.json').read_text())
  assert saved['training']['num_rounds'] == 3 and saved['training']['clients_per_round'] == 5

  status, out, _ = _train(capsys, *_short(tmp_path, '--training.num_rounds', '4'))
  assert status == 0 and 'resumed after round 3' in out and '1 trained' in out
  assert json.loads((run / 'config.json').read_text()) == saved  # the original config, kept
  with open(run / 'metrics.csv') as f:
    assert [r['round'] for r in csv.DictReader(f)] == ['1', '2', '3', '4']

  status, _, err = _train(capsys, *_short(tmp_path, '--set', 'seed=9'))
  assert status == 2 and 'seed was 0, now 9' in err and '--output.overwrite' in err
  assert json.loads((run / 'config.json').read_text())['seed'] == 0  # left untouched


def test_dp_run_reports_the_accountants_epsilon_every_round(tmp_path, capsys):
  dpa = pytest.importorskip('dp_accounting')
  z, rounds, clients, cohort = 0.8, 2, 30, 10
  status, out, err = _train(capsys, '--output.root', str(tmp_path), '--training.num_rounds',
                          str(rounds), '--data.num_clients', str(clients),
                          '--training.clients_per_round', str(cohort),
                          '--training.client_epochs', '1', '--evaluation.every', '0',
                          '--training.algorithm', 'fed_avg_unweighted', '--aggregator.kind', 'dp',
                          '--aggregator.noise_multiplier', str(z), '--training.sampling', 'poisson',
                          '--output.tensorboard', 'false')
  assert status == 0, err
  run = tmp_path / 'digits_fedavg'
  with open(run / 'metrics.csv') as f:
    rows = list(csv.DictReader(f))
  summary = json.loads((run / 'summary.json').read_text())
  population = summary['privacy']['sampling']['population']  # the clients with data
  assert [r['round'] for r in rows] == ['1', '2'] and population <= clients
  for row in rows:
    accountant = dpa.rdp.RdpAccountant()
    event = dpa.PoissonSampledDpEvent(cohort / population, dpa.GaussianDpEvent(z))
    accountant.compose(event, int(row['round']))
    assert float(row['privacy/epsilon']) == pytest.approx(accountant.get_epsilon(1e-5), abs=1e-6)
    assert row['aggregator/zeroing/dp_query_metrics/clip']
  assert summary['privacy']['epsilon'] == pytest.approx(float(rows[-1]['privacy/epsilon']))
  assert summary['privacy']['event'] == 'PoissonSampledDpEvent'
  assert f"epsilon {summary['privacy']['epsilon']:.4g} at delta 1e-05 after 2 rounds" in out
  assert (run / 'curves.png').is_file()


def test_help_explains_every_option(capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(['train', '--help'])
  assert exit_info.value.code == 0
  out = capsys.readouterr().out
  for key in config.flat_fields():
    assert f'--{key}' in out, key
  assert 'Rounds to train' in out and '--set KEY=VALUE' in out and '--config FILE' in out
  # The defaults shown are the config's own, per section (not the section class's defaults).
  flat = ' '.join(out.split())
  assert '--client_optimizer.learning_rate FLOAT Learning rate. (default: 0.01)' in flat
  assert '--server_optimizer.learning_rate FLOAT Learning rate. (default: 1.0)' in flat
  for name in config.packaged_configs():
    assert name in flat


def test_options_cannot_be_abbreviated(capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(['train', '--training.num', '7', '--print-config'])
  assert exit_info.value.code == 2
  assert 'unrecognized arguments: --training.num' in capsys.readouterr().err


def test_config_by_packaged_name(capsys):
  assert set(config.packaged_configs()) >= {'digits', 'digits_cnn', 'emnist62_fedavg'}
  status, out, _ = _train(capsys, '--config', 'emnist62_fedavg', '--print-config')
  assert status == 0 and json.loads(out)['training']['num_rounds'] == 1500
  status, _, err = _train(capsys, '--config', 'emnist62', '--print-config')
  assert status == 2 and 'emnist62_fedavg' in err and 'digits_cnn' in err


def test_print_config_applies_file_then_flags_then_set(capsys):
  status, out, _ = _train(
      capsys,
      '--config',
      DIGITS,
      '--training.num_rounds',
      '9',
      '--set',
      'training.num_rounds=11',
      '--print-config',
  )
  assert status == 0 and json.loads(out)['training']['num_rounds'] == 11


@pytest.mark.parametrize(
    'content, expected',
    [
        ('[training]\nrounds = 3\n', ['training.rounds', 'bad.toml', 'training.num_rounds']),
        (
            '[training]\nbatch_size = "20"\n',
            ['training.batch_size', 'bad.toml', 'expected an integer'],
        ),
    ],
)
def test_bad_config_fails_before_training(tmp_path, capsys, content, expected):
  bad = tmp_path / 'bad.toml'
  bad.write_text(content)
  status, out, err = _train(capsys, '--config', str(bad), '--output.root', str(tmp_path / 'runs'))
  assert status == 2 and out == ''
  for part in expected:
    assert part in err, err
  assert not (tmp_path / 'runs').exists()


def test_dataset_that_cannot_be_loaded_fails_before_training(tmp_path, capsys):
  cache = tmp_path / 'empty-cache'
  status, _, err = _train(
      capsys,
      '--config',
      str(ROOT / 'fedjax_like' / 'configs' / 'emnist62_fedavg.toml'),
      '--data.cache_dir',
      str(cache),
      '--data.download',
      'false',
      '--output.root',
      str(tmp_path / 'runs'),
  )
  assert status == 2
  assert "data.dataset = 'emnist' cannot be loaded" in err and str(cache) in err
  assert 'emnist_all.sqlite' in err
  assert not (tmp_path / 'runs').exists()


def test_conv_lowering_option_reaches_the_engine(tmp_path, capsys, monkeypatch):
  from fedjax_like.core.engine import lowering

  seen = []
  original = lowering.lower

  def spy(fn, mode, *rest):
    seen.append(mode)
    return original(fn, mode, *rest)

  monkeypatch.setattr(lowering, 'lower', spy)
  status, _, _ = _train(
      capsys, *_short(tmp_path, '--training.conv_lowering', 'im2col', '--model.name', 'cnn',
                      '--training.num_rounds', '1', '--training.clients_per_round', '2',
                      '--evaluation.every', '0', '--output.plot', 'false',
                      '--output.tensorboard', 'false')
  )
  assert status == 0 and seen and set(seen) == {'im2col'}, seen
  status, _, err = _train(capsys, *_short(tmp_path / 'b', '--training.conv_lowering', 'fast'))
  assert status != 0 and 'training.conv_lowering' in err and 'native' in err, err


def test_failures_mid_run_are_one_paragraph_with_status_2(tmp_path, capsys, monkeypatch):
  from fedjax_like.simulation import experiment
  from fedjax_like.simulation.checkpoint import CheckpointWriteError
  from fedjax_like.simulation.cohorts import ClientDataError

  a_file = tmp_path / 'not-a-directory'
  a_file.write_text('')
  status, _, err = _train(capsys, '--output.root', str(a_file))
  assert status == 2 and 'is a file, not a directory' in err and '--output.root' in err

  real_find_spec = cli.importlib.util.find_spec
  monkeypatch.setattr(
      cli.importlib.util, 'find_spec', lambda name: None if name == 'tensorboardX' else
      real_find_spec(name)
  )
  status, _, err = _train(capsys, '--output.root', str(tmp_path))
  assert status == 2 and "tensorboardX for TensorBoard logs" in err and "fedjax_like[sim]" in err
  monkeypatch.setattr(cli.importlib.util, 'find_spec', real_find_spec)

  for error in (
      ClientDataError(3, 'f0042', ValueError('truncated record\nat byte 12')),
      CheckpointWriteError('Could not write the checkpoint of round 4: No space left on device.'),
  ):
    def fail(config, error=error):
      raise error

    monkeypatch.setattr(experiment, 'run_experiment', fail)
    status, _, err = _train(capsys, '--output.root', str(tmp_path))
    assert status == 2 and err.count('\n') == 1 and 'Traceback' not in err, err
    assert err.startswith('fedjax-like: error: ') and str(error).split()[0] in err


def test_cpu_devices_shard_the_cohort_over_the_cores(tmp_path):
  import os
  import subprocess
  import sys

  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_NUM_CPU_DEVICES')}
  args = _short(tmp_path, '--training.cpu_devices', '2', '--output.progress', 'log',
                '--training.num_rounds', '1', '--evaluation.every', '0', '--output.plot', 'false',
                '--output.tensorboard', 'false')
  result = subprocess.run(
      [sys.executable, '-m', 'fedjax_like', 'train', *args],
      capture_output=True, text=True, cwd=ROOT, env={**env, 'JAX_PLATFORMS': 'cpu'}, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert '2 devices (cpu)' in result.stdout + result.stderr


def test_cpu_devices_after_jax_started_names_the_fix(tmp_path, capsys):
  import jax

  have = len(jax.devices('cpu'))
  status, out, err = _train(capsys, *_short(tmp_path, '--training.cpu_devices', str(have + 1)))
  assert status == 2
  assert f'JAX_NUM_CPU_DEVICES={have + 1}' in out + err and 'fresh process' in out + err
