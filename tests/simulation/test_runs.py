"""``load_run``: a run directory's config, process and final state, and errors that say why not."""

import jax
import numpy as np
import pytest

import fedjax_like as fl
from fedjax_like.simulation.config import load_config
from fedjax_like.simulation.experiment import run_experiment


def test_load_run_gives_config_process_and_final_state(tmp_path):
  config = load_config('digits', [
      ('output.root', str(tmp_path)), ('training.num_rounds', '2'),
      ('training.clients_per_round', '3'), ('training.client_epochs', '1'),
      ('evaluation.every', '0'), ('output.checkpoint_every', '1'),
      ('output.tensorboard', 'false'), ('output.plot', 'false'), ('output.progress', 'none'),
  ])  # fmt: skip
  result, paths, _ = run_experiment(config)

  assert 'simulation' in fl.__all__  # fl.simulation after a plain `import fedjax_like as fl`
  run = fl.simulation.load_run(paths.run_dir)
  assert run.config == config and run.round_num == 2 and run.model is run.process.model
  assert [r['round'] for r in run.history] == [1, 2]
  final = jax.tree.leaves(result.state.global_model_weights)
  for a, b in zip(jax.tree.leaves(run.state.global_model_weights), final, strict=True):
    np.testing.assert_array_equal(a, b)
  variables = fl.models.export_flax_variables(run.process.get_model_weights(run.state))
  for a, b in zip(jax.tree.leaves(variables['params']), final, strict=True):
    np.testing.assert_array_equal(a, b)
  assert fl.simulation.load_run(paths.run_dir, round_num=1).round_num == 1

  with pytest.raises(FileNotFoundError, match='no config.json'):
    fl.simulation.load_run(tmp_path)
