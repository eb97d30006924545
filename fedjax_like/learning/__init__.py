"""The Federated Learning API: optimizers, the four-part templates, learning processes, algorithms.

- :mod:`~fedjax_like.learning.templates`: distributor, client work, aggregator, finalizer, and
  ``compose_learning_process`` wiring them into a :class:`LearningProcess`;
- :mod:`~fedjax_like.learning.algorithms`: FedAvg, FedSGD, FedProx, FedOpt, SCAFFOLD, MimeLite,
  federated and personalization evaluation, each a short composition of template parts;
- :mod:`~fedjax_like.learning.optimizers`: client and server optimizers (optax underneath);
- :mod:`~fedjax_like.learning.model_update_aggregator`: ``robust_aggregator``, ``dp_aggregator``,
  ``secure_aggregator`` and ``compression_aggregator``, composed from ``fl.aggregators`` as TFF
  composes them;
- :mod:`~fedjax_like.learning.privacy_accounting`: :class:`PrivacyAccountant` (the epsilon of a
  DP-FedAvg run after t rounds, RDP or PLD, for the client sampler in use) and
  :func:`noise_multiplier_for_epsilon` (needs the ``dp`` extra);
- :mod:`~fedjax_like.learning.models`: ``ModelWeights`` and the Flax adapters under TFF's path
  (``fl.learning.models.ModelWeights``);
- :class:`ClientWeighting`, and :class:`ClientStates` (host-side per-client state).
"""

from fedjax_like.learning import algorithms, models, optimizers, privacy_accounting, templates
from fedjax_like.learning.client_states import ClientStates, StatefulClientWorkState
from fedjax_like.learning.client_weighting import ClientWeighting
from fedjax_like.learning.model_update_aggregator import (
    compression_aggregator,
    dp_aggregator,
    robust_aggregator,
    secure_aggregator,
)
from fedjax_like.learning.privacy_accounting import (
    PrivacyAccountant,
    noise_multiplier_for_epsilon,
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
    'PrivacyAccountant',
    'StatefulClientWorkState',
    'algorithms',
    'compression_aggregator',
    'dp_aggregator',
    'models',
    'noise_multiplier_for_epsilon',
    'optimizers',
    'privacy_accounting',
    'robust_aggregator',
    'secure_aggregator',
    'templates',
]
