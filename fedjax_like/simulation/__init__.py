"""The experiment driver: training loop, checkpoints, metric writers, progress, configs and CLI.

- :func:`run_training_process` (:mod:`.loop`): sample, pack, train, evaluate, log and checkpoint a
  learning process for many rounds; an interrupted run resumes exactly.
- :class:`ClientPreprocess`, :func:`pack_round` (:mod:`.cohorts`): a round's cohort on the host.
- :class:`FederatedEvaluation` (:mod:`.evaluation`): the global model on the test clients.
- :class:`Checkpointer` (:mod:`.checkpoint`): orbax checkpoints, committed atomically.
- :class:`CsvWriter`, :class:`TensorBoardWriter`, :class:`CurvePlot` (:mod:`.writers`).
- :mod:`.config`, :mod:`.experiment`, :mod:`.cli`: ``fedjax-like train --config FILE``;
  :mod:`.datasets`: each ``--data.dataset`` as its TFF baseline task (:mod:`.baselines`), and
  tensorflow-datasets classification datasets (:mod:`.tfds_task`).
- :func:`load_run` (:mod:`.runs`): a run directory's config, process and final state.
"""

from fedjax_like.simulation.checkpoint import Checkpointer
from fedjax_like.simulation.cohorts import ClientPreprocess, pack_round, step_bucket
from fedjax_like.simulation.config import ConfigError, ExperimentConfig, load_config
from fedjax_like.simulation.evaluation import FederatedEvaluation
from fedjax_like.simulation.loop import ResumeError, TrainingResult, run_training_process
from fedjax_like.simulation.runs import LoadedRun, load_run
from fedjax_like.simulation.writers import CsvWriter, CurvePlot, TensorBoardWriter, plot_curves

__all__ = [
    'Checkpointer',
    'ClientPreprocess',
    'ConfigError',
    'CsvWriter',
    'CurvePlot',
    'ExperimentConfig',
    'FederatedEvaluation',
    'LoadedRun',
    'ResumeError',
    'TensorBoardWriter',
    'TrainingResult',
    'load_config',
    'load_run',
    'pack_round',
    'plot_curves',
    'run_training_process',
    'step_bucket',
]
