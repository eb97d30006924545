"""Standard models of the federated learning literature, as ``flax.linen`` modules and ``Model``s.

Each module holds one family, with its builders returning a
:class:`~fedjax_like.models.model.Model` carrying the loss and metrics of TFF's baseline task:

- :mod:`.emnist`: ``logistic_regression``, ``mlp`` (2NN), ``emnist_cnn`` (Reddi et al.'s CNN
  with dropout), ``fedavg_cnn`` (McMahan et al.'s CNN); ``x`` EMNIST pixels, ``y`` a label.
- :mod:`.shakespeare`: ``shakespeare_char_lstm`` (embedding 8, 2 x LSTM 256, dense 90).
- :mod:`.stackoverflow`: ``stackoverflow_word_lstm`` (embedding 96, LSTM 670, dense 96, dense
  10,004) and ``stackoverflow_tag_lr`` (10,000 -> 500, sigmoid cross-entropy).
- :mod:`.resnet`: ``resnet18`` (group norm, 2 groups as Reddi et al.) for CIFAR-100.
- :mod:`.lstm`: Keras's LSTM layer (weights, gates and initializers) that the recurrent models use.

The image classifiers are registered in :data:`MODELS` under short names for configs:
``create_model('cnn', num_classes=62)``.
"""

from collections.abc import Callable

from fedjax_like.models.model import Model
from fedjax_like.models.zoo.emnist import (
    MLP,
    EmnistCnn,
    FedAvgCnn,
    LogisticRegression,
    emnist_cnn,
    fedavg_cnn,
    logistic_regression,
    mlp,
)
from fedjax_like.models.zoo.lstm import LSTM
from fedjax_like.models.zoo.resnet import ResNet, resnet18
from fedjax_like.models.zoo.shakespeare import CharLSTM, shakespeare_char_lstm
from fedjax_like.models.zoo.stackoverflow import (
    TagLogisticRegression,
    WordLSTM,
    stackoverflow_tag_lr,
    stackoverflow_word_lstm,
)

MODELS: dict[str, Callable[..., Model]] = {
    'logistic': logistic_regression,
    'mlp': mlp,
    'cnn': emnist_cnn,
    'fedavg_cnn': fedavg_cnn,
    'resnet18': resnet18,
}


def create_model(name: str, num_classes: int) -> Model:
  """The image classifier registered as ``name`` (one of :data:`MODELS`) with ``num_classes``
  outputs."""
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; choose one of {sorted(MODELS)}.')
  return MODELS[name](num_classes=num_classes)


__all__ = [
    'LSTM',
    'MLP',
    'MODELS',
    'CharLSTM',
    'EmnistCnn',
    'FedAvgCnn',
    'LogisticRegression',
    'ResNet',
    'TagLogisticRegression',
    'WordLSTM',
    'create_model',
    'emnist_cnn',
    'fedavg_cnn',
    'logistic_regression',
    'mlp',
    'resnet18',
    'shakespeare_char_lstm',
    'stackoverflow_tag_lr',
    'stackoverflow_word_lstm',
]
