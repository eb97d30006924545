"""pfl-research (Apple, PyTorch backend) on the shared FedAvg workload.

Native form: one `pfl.data.dataset.Dataset` per client holding NCHW float32 /
int64 torch tensors, built once; a `FederatedDataset` whose user sampler is
`minimize_reuse` over the 10 users, cohort size 10 (every client every round).
Algorithm: `pfl.algorithm.FederatedAveraging` with `SimulatedBackend`, local
`torch.optim.SGD(lr=0.1)`, central `torch.optim.SGD(lr=1.0)`; pfl averages the
clients' deltas with weight 1 per client, which equals the example-weighted
mean here (every client holds 64 examples).
"""

import contextlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workload as W  # noqa: E402

TIMER = (
  'pfl FederatedAveraging.run loop, one central iteration: between '
  'consecutive after_central_iteration callbacks (the first from '
  'on_train_begin). Includes get_next_central_contexts, sampling the 10 '
  'users from the FederatedDataset (pre-built pfl Datasets of torch '
  'tensors), for each user: set_parameters/get_parameters, 4 local SGD '
  'steps (forward, backward, step) and get_model_difference, '
  'SumAggregator over users, statistics.average() and the central SGD '
  'step (torch CPU is synchronous, so the weights are ready). Excludes '
  'data generation/packing and metric printing (send_metrics_to_platform'
  '=False); evaluation only in iteration 0 (a warm-up round).'
)


def main():
  args = W.parse_args('pfl')
  import numpy as np
  import pfl
  import torch
  import torch_models
  from pfl.aggregate.simulate import SimulatedBackend
  from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
  from pfl.callback.base import TrainingProcessCallback
  from pfl.data.dataset import Dataset
  from pfl.data.federated_dataset import FederatedDataset
  from pfl.data.sampling import get_user_sampler
  from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
  from pfl.metrics import Metrics
  from pfl.model.pytorch import PyTorchModel

  clients = W.load_clients()
  datasets = {
    i: Dataset((torch_models.to_nchw(x), torch.from_numpy(y.astype(np.int64))), user_id=i)
    for i, (x, y) in enumerate(clients)
  }
  fed = FederatedDataset(
    lambda uid: datasets[uid], get_user_sampler('minimize_reuse', list(range(W.NUM_CLIENTS)))
  )
  val = FederatedDataset(
    lambda uid: datasets[uid], get_user_sampler('minimize_reuse', list(range(W.NUM_CLIENTS)))
  )

  module = torch_models.make_model(args.model)
  model = PyTorchModel(
    model=module,
    local_optimizer_create=torch.optim.SGD,
    central_optimizer=torch.optim.SGD(module.parameters(), lr=W.SERVER_LR),
  )
  backend = SimulatedBackend(training_data=fed, val_data=val)
  total = args.warmup + args.rounds
  algo_params = NNAlgorithmParams(
    central_num_iterations=total,
    evaluation_frequency=total + 1,
    train_cohort_size=W.NUM_CLIENTS,
    val_cohort_size=0,
  )
  train_params = NNTrainHyperParams(
    local_learning_rate=W.CLIENT_LR, local_num_epochs=W.LOCAL_EPOCHS, local_batch_size=W.BATCH_SIZE
  )
  eval_params = NNEvalHyperParams(local_batch_size=None)

  stamps = []

  class Timer(TrainingProcessCallback):
    def on_train_begin(self, *, model):
      stamps.append(time.perf_counter())
      return Metrics()

    def after_central_iteration(self, aggregate_metrics, model, *, central_iteration):
      stamps.append(time.perf_counter())
      return False, Metrics()

  x_all, y_all = W.load_all()
  x_all_t = torch_models.to_nchw(x_all)
  init_loss, _ = torch_models.evaluate(module, x_all_t, y_all)

  with contextlib.redirect_stdout(sys.stderr):
    FederatedAveraging().run(
      algorithm_params=algo_params,
      backend=backend,
      model=model,
      model_train_params=train_params,
      model_eval_params=eval_params,
      callbacks=[Timer()],
      send_metrics_to_platform=False,
    )
  times = list(np.diff(stamps))
  assert len(times) == total, (len(times), total)
  loss, acc = torch_models.evaluate(module, x_all_t, y_all)
  W.check_and_report(
    peer='pfl',
    model=args.model,
    round_times=times,
    warmup=args.warmup,
    timer_includes=TIMER,
    versions={
      'pfl': pfl.__version__
      if hasattr(pfl, '__version__')
      else __import__('importlib.metadata').metadata.version('pfl'),
      'torch': torch.__version__,
    },
    final_loss=loss,
    final_accuracy=acc,
    initial_loss=init_loss,
    extra={'torch_threads': torch.get_num_threads()},
  )


if __name__ == '__main__':
  main()
