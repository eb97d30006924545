"""The Federated Learning API: optimizers, the four-part templates, learning processes, algorithms.

- :mod:`~fedjax_like.learning.templates`: distributor, client work, aggregator, finalizer, and
  ``compose_learning_process`` wiring them into a :class:`LearningProcess`;
- :mod:`~fedjax_like.learning.algorithms`: FedAvg, FedSGD, FedProx, FedOpt, SCAFFOLD, MimeLite,
  federated and personalization evaluation, each a short composition of template parts;
- :mod:`~fedjax_like.learning.optimizers`: client and server optimizers (optax underneath);
- :mod:`~fedjax_like.learning.model_update_aggregator`: ``robust_aggregator``, ``dp_aggregator``
  and ``secure_aggregator``, composed from ``fl.aggregators`` as TFF composes them;
- :mod:`~fedjax_like.learning.models`: ``ModelWeights`` and the Flax adapters under TFF's path
  (``fl.learning.models.ModelWeights``);
- :class:`ClientWeighting`, and :class:`ClientStates` (host-side per-client state).
"""

from fedjax_like.learning import algorithms, models, optimizers, templates
from fedjax_like.learning.client_states import ClientStates, StatefulClientWorkState
from fedjax_like.learning.client_weighting import ClientWeighting
from fedjax_like.learning.model_update_aggregator import (
    dp_aggregator,
    robust_aggregator,
    secure_aggregator,
)
from fedjax_like.learning.process import (
    LearningAlgorithmState,
    LearningProcess,
    LearningProcessOutput,
)

__all__ = [
    'ClientStates',
    'ClientWeighting',
    'LearningAlgorithmState',
    'LearningProcess',
    'LearningProcessOutput',
    'StatefulClientWorkState',
    'algorithms',
    'dp_aggregator',
    'models',
    'optimizers',
    'robust_aggregator',
    'secure_aggregator',
    'templates',
]
