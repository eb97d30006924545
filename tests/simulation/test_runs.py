"""``load_run``: a run directory's config, process and final state, and errors that say why not."""

import jax
import numpy as np
import pytest

import fedjax_like as fl
from fedjax_like.simulation import config as config_lib
from fedjax_like.simulation.checkpoint import Checkpointer
from fedjax_like.simulation.experiment import build_experiment, run_paths


def test_load_run_gives_config_process_and_final_state(tmp_path):
  """A run directory as ``fedjax-like train`` leaves it (config.json, checkpoints of rounds 1 and
  2), written here without training: load_run must rebuild the process and restore round 2."""
  config = config_lib.load_config('digits', [('output.root', str(tmp_path)), ('seed', '3')])
  paths = run_paths(config)
  process = build_experiment(config).process
  states = {}
  checkpointer = Checkpointer(paths.checkpoints)
  for round_num in (1, 2):
    state = process.initialize()
    weights = jax.tree.map(lambda w, r=round_num: w + r, state.global_model_weights)
    states[round_num] = process.set_model_weights(state, weights)
    history = [{'round': r} for r in range(1, round_num + 1)]
    checkpointer.save(round_num, states[round_num], {'history': history})
  checkpointer.close()
  with open(paths.config, 'w') as f:
    f.write(config_lib.dumps(config))

  assert 'simulation' in fl.__all__  # fl.simulation after a plain `import fedjax_like as fl`
  run = fl.simulation.load_run(paths.run_dir)
  assert run.config == config and run.round_num == 2 and run.model is run.process.model
  assert [r['round'] for r in run.history] == [1, 2]
  final = jax.tree.leaves(states[2].global_model_weights)
  for a, b in zip(jax.tree.leaves(run.state.global_model_weights), final, strict=True):
    np.testing.assert_array_equal(a, b)
  variables = fl.models.export_flax_variables(run.process.get_model_weights(run.state))
  for a, b in zip(jax.tree.leaves(variables['params']), final, strict=True):
    np.testing.assert_array_equal(a, b)
  first = fl.simulation.load_run(paths.run_dir, round_num=1)
  assert first.round_num == 1
  np.testing.assert_array_equal(
      jax.tree.leaves(first.state.global_model_weights)[0],
      jax.tree.leaves(states[1].global_model_weights)[0],
  )

  with pytest.raises(FileNotFoundError, match='no config.json'):
    fl.simulation.load_run(tmp_path)
