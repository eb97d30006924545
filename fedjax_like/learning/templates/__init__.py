"""The four parts a learning process is composed of, and the composer (TFF's learning templates).

Every part is a pure ``(initialize, next)`` pair over pytrees, held in a NamedTuple of functions
(optax style); ``next`` returns ``MeasuredProcessOutput(state, result, measurements)``:

============  ======================================================================  ============
part          ``next(state, ...)`` result                                             module
============  ======================================================================  ============
distributor   ``(weights@SERVER) -> weights@CLIENTS``                                 distributors
client work   ``(weights@CLIENTS, data@CLIENTS) -> {ClientResult}@CLIENTS``           client_works
aggregator    ``(update@CLIENTS, weight@CLIENTS) -> update@SERVER``                   aggregators
finalizer     ``(weights@SERVER, update@SERVER) -> weights@SERVER``                   finalizers
============  ======================================================================  ============

(aggregators: the :mod:`fedjax_like.aggregators` package, factories included.)

:func:`compose_learning_process` checks that the parts fit (types flow from one to the next, errors
name both parts and both types) and wires them into a jit-compiled
:class:`~fedjax_like.learning.process.LearningProcess` whose state and metrics are keyed by the four
parts. Replacing one part (a DP aggregator, a server optimizer, a proximal client work) touches
nothing else.

Client work and sum-shaped aggregators also come in *map-reduce form* (``prepare`` on the server,
per-client work on each client, ``report`` on the server); a client work's per-client part is a
:class:`~fedjax_like.core.engine.ClientLoop` (``init`` / ``step`` per batch / ``finish``). The
composer fuses the two into one ``federated_map`` and one ``federated_sum``, so local training runs
once per client and updates are never stacked. ``training`` holds the loop pieces (local training,
full-batch gradients, evaluation sums) that client works are written with.
"""

from fedjax_like.aggregators.factory import MeasuredProcessOutput
from fedjax_like.learning.templates import training
from fedjax_like.learning.templates.client_works import (
    ClientOutput,
    ClientResult,
    ClientWorkMapReduce,
    ClientWorkOutput,
    ClientWorkProcess,
    build_client_work,
)
from fedjax_like.learning.templates.composers import compose_learning_process
from fedjax_like.learning.templates.distributors import DistributionProcess, build_broadcast_process
from fedjax_like.learning.templates.finalizers import (
    FinalizerProcess,
    ScheduledOptimizerState,
    build_apply_optimizer_finalizer,
    build_identity_finalizer,
)
from fedjax_like.learning.templates.model_delta_client_work import (
    TrainingState,
    build_model_delta_client_work,
)

__all__ = [
    'ClientOutput',
    'ClientResult',
    'ClientWorkMapReduce',
    'ClientWorkOutput',
    'ClientWorkProcess',
    'DistributionProcess',
    'FinalizerProcess',
    'MeasuredProcessOutput',
    'ScheduledOptimizerState',
    'TrainingState',
    'build_apply_optimizer_finalizer',
    'build_broadcast_process',
    'build_client_work',
    'build_identity_finalizer',
    'build_model_delta_client_work',
    'compose_learning_process',
    'training',
]
