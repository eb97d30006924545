"""PyTorch versions of the two benchmark models (shared by peer_pfl / peer_flower).

Images arrive NHWC (28, 28, 1) from workload.py; `to_nchw` converts once, when
the data is packed into the peer's native form (outside the timers).
"""

import numpy as np
import torch
import workload as W
from torch import nn


class _LossMetricsMixin:
  """pfl's PyTorchModel wants `loss(x, y)` and `metrics(x, y)` on the module."""

  def loss(self, x, y, eval=False):  # noqa: A002
    self.eval() if eval else self.train()
    return nn.functional.cross_entropy(self(x), y.long())

  @torch.no_grad()
  def metrics(self, x, y, eval=True):  # noqa: A002
    from pfl.metrics import Weighted

    self.eval()
    logits = self(x)
    loss = nn.functional.cross_entropy(logits, y.long(), reduction='sum').item()
    correct = (logits.argmax(1) == y.long()).sum().item()
    return {'loss': Weighted(loss, len(x)), 'accuracy': Weighted(correct, len(x))}


class CNN(_LossMetricsMixin, nn.Module):
  def __init__(self):
    super().__init__()
    self.net = nn.Sequential(
      nn.Conv2d(1, 32, 3),
      nn.ReLU(),  # 28 -> 26 (valid)
      nn.Conv2d(32, 64, 3),
      nn.ReLU(),  # 26 -> 24
      nn.MaxPool2d(2),  # 24 -> 12
      nn.Flatten(),  # 12*12*64 = 9216
      nn.Linear(9216, 128),
      nn.ReLU(),
      nn.Linear(128, W.NUM_CLASSES),
    )

  def forward(self, x):
    return self.net(x)


class Linear(_LossMetricsMixin, nn.Module):
  def __init__(self):
    super().__init__()
    self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, W.NUM_CLASSES))

  def forward(self, x):
    return self.net(x)


def make_model(name):
  torch.manual_seed(0)
  return {'cnn': CNN, 'linear': Linear}[name]()


def to_nchw(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@torch.no_grad()
def evaluate(module, x_nchw: torch.Tensor, y: np.ndarray):
  module.eval()
  return W.numpy_eval(lambda xb: module(torch.from_numpy(xb)).numpy(), x_nchw.numpy(), y)
