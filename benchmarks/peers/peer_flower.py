"""Flower 1.42 (simulation engine on Ray, PyTorch clients) on the shared workload.

Uses `flwr.simulation.run_simulation` with a `ServerApp` running the Message-API
strategy `flwr.serverapp.strategy.FedAvg` (fraction_train 1.0 = all 10 nodes,
fraction_evaluate 0.0 = no federated evaluation) and a `ClientApp` whose
train() does 1 epoch of torch SGD(lr 0.1) over 4 batches of 16 and replies
with its weights and `num-examples`.  Flower's FedAvg sets the new global
weights to the num-examples-weighted mean of the client weights, which with
server lr 1.0 equals server + weighted mean of the deltas.

Native form: each Ray actor loads its partition (the NCHW torch tensors of
client `partition-id`) from the shared .npz once and caches it, and keeps one
torch model whose state it overwrites every round; so after warm-up no data
loading or model construction is in the timed rounds.  Ray resources are
Flower's defaults (client_resources num_cpus=2 on this 2-core machine: one
actor, clients run one after another) unless BENCH_FLOWER_CLIENT_CPUS is set.
"""

import os
import sys
import time

PEERS_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, PEERS_DIR)
os.environ.setdefault('FLWR_TELEMETRY_ENABLED', '0')  # no network here
os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
import workload as W  # noqa: E402

TIMER = (
  'one server fit round of the Message-API FedAvg.start loop: from the '
  'start of strategy.configure_train (node sampling, building the 10 '
  'train Messages with the ArrayRecord of global weights) through '
  'grid.send_and_receive (simulation LinkState, Ray actor dispatch, '
  'client-side ArrayRecord -> torch state_dict, 4 SGD steps, torch -> '
  'ArrayRecord reply, polling for replies) to the end of '
  'strategy.aggregate_train (num-examples-weighted mean of the 10 '
  'ArrayRecords -> new global ArrayRecord, plus train-metric '
  "aggregation). Excludes Ray/simulation start-up, actors' one-time "
  'data load and model build (warm-up), and the evaluate phase '
  '(fraction_evaluate=0).'
)

ROUND_TIMES = []
RESULT = {}


def main():
  args = W.parse_args('flower')
  import importlib.metadata as md

  import ray
  import torch
  import torch_models
  from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
  from flwr.clientapp import ClientApp
  from flwr.serverapp import Grid, ServerApp
  from flwr.serverapp.strategy import FedAvg
  from flwr.simulation import run_simulation

  model_name = args.model
  peers_dir = PEERS_DIR

  client_app = ClientApp()

  @client_app.train()
  def train(msg: Message, context: Context):
    # Runs inside a Ray actor: cache data and model per actor process.
    if peers_dir not in sys.path:
      sys.path.insert(0, peers_dir)
    import numpy as _np
    import torch as _torch
    import torch_models as _tm
    import workload as _W

    cache = _W.__dict__.setdefault('_flower_actor_cache', {})
    pid = int(context.node_config['partition-id'])
    if 'clients' not in cache:
      cache['clients'] = [
        (_tm.to_nchw(x), _torch.from_numpy(y.astype(_np.int64))) for x, y in _W.load_clients()
      ]
    if model_name not in cache:
      cache[model_name] = _tm.make_model(model_name)
    net = cache[model_name]
    net.load_state_dict(msg.content['arrays'].to_torch_state_dict())
    x, y = cache['clients'][pid]
    opt = _torch.optim.SGD(net.parameters(), lr=_W.CLIENT_LR)
    net.train()
    for _ in range(_W.LOCAL_EPOCHS):
      for i in range(0, len(x), _W.BATCH_SIZE):
        opt.zero_grad()
        loss = _torch.nn.functional.cross_entropy(
          net(x[i : i + _W.BATCH_SIZE]), y[i : i + _W.BATCH_SIZE]
        )
        loss.backward()
        opt.step()
    content = RecordDict(
      {
        'arrays': ArrayRecord(net.state_dict()),
        'metrics': MetricRecord({'num-examples': len(x), 'train_loss': float(loss.item())}),
      }
    )
    return Message(content=content, reply_to=msg)

  class TimedFedAvg(FedAvg):
    def configure_train(self, server_round, arrays, config, grid):
      self._t0 = time.perf_counter()
      return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
      out = super().aggregate_train(server_round, replies)
      ROUND_TIMES.append(time.perf_counter() - self._t0)
      return out

  init_model = torch_models.make_model(model_name)
  x_all, y_all = W.load_all()
  x_all_t = torch_models.to_nchw(x_all)
  RESULT['initial_loss'], _ = torch_models.evaluate(init_model, x_all_t, y_all)
  total = args.warmup + args.rounds

  server_app = ServerApp()

  @server_app.main()
  def server_main(grid: Grid, context: Context):
    strategy = TimedFedAvg(
      fraction_train=1.0,
      fraction_evaluate=0.0,
      min_train_nodes=W.NUM_CLIENTS,
      min_available_nodes=W.NUM_CLIENTS,
    )
    result = strategy.start(
      grid=grid, initial_arrays=ArrayRecord(init_model.state_dict()), num_rounds=total
    )
    final = torch_models.make_model(model_name)
    final.load_state_dict(result.arrays.to_torch_state_dict())
    RESULT['loss'], RESULT['acc'] = torch_models.evaluate(final, x_all_t, y_all)

  backend_config = {'init_args': {'include_dashboard': False}}
  if os.environ.get('BENCH_FLOWER_CLIENT_CPUS'):
    backend_config['client_resources'] = {
      'num_cpus': float(os.environ['BENCH_FLOWER_CLIENT_CPUS']),
      'num_gpus': 0.0,
    }
  run_simulation(
    server_app=server_app,
    client_app=client_app,
    num_supernodes=W.NUM_CLIENTS,
    backend_config=backend_config,
  )
  if ray.is_initialized():
    ray.shutdown()
  if len(ROUND_TIMES) != total:
    raise SystemExit(
      f'expected {total} timed rounds, got {len(ROUND_TIMES)}; simulation failed (see stderr)'
    )
  W.check_and_report(
    peer='flower',
    model=model_name,
    round_times=ROUND_TIMES,
    warmup=args.warmup,
    timer_includes=TIMER,
    versions={'flwr': md.version('flwr'), 'ray': ray.__version__, 'torch': torch.__version__},
    final_loss=RESULT.get('loss'),
    final_accuracy=RESULT.get('acc'),
    initial_loss=RESULT['initial_loss'],
    extra={
      'client_resources': backend_config.get(
        'client_resources', 'flower default (num_cpus=2, num_gpus=0)'
      )
    },
  )


if __name__ == '__main__':
  # The JSON line goes to the real stdout; Flower/Ray logs to stderr.
  real_stdout = os.dup(1)
  os.dup2(2, 1)
  sys.stdout = os.fdopen(real_stdout, 'w')
  main()
