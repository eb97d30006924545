"""The Federated Core: placements, federated types, intrinsics, computations and the engine.

Write a federated algorithm as a Python function of placed values and decorate it::

    from fedjax_like.core import CLIENTS, SERVER, federated_computation, federated_mean

    @federated_computation(CLIENTS)
    def average(x):
      return federated_mean(x)

    average(xs)                    # xs: [num_clients, ...]
    print(average.type_signature)  # ({float32[3]}@CLIENTS -> float32[3]@SERVER)

:mod:`~fedjax_like.core.placements` holds the types, :mod:`~fedjax_like.core.values` the placed
values, :mod:`~fedjax_like.core.intrinsics` the communication operators (with
:mod:`~fedjax_like.core.secure_sum` and :mod:`~fedjax_like.core.sequences`),
:mod:`~fedjax_like.core.passes` the lazy reductions that run together in one engine pass,
:mod:`~fedjax_like.core.computation` the decorator and :mod:`~fedjax_like.core.engine` the engine
that runs the clients (reached through its small protocol: :class:`~fedjax_like.core.engine.Program`,
:class:`~fedjax_like.core.engine.ClientLoop`, :func:`~fedjax_like.core.engine.combine`,
``engine.run``); :mod:`~fedjax_like.core.cohort` keeps the engine's names under their former home.
"""

from fedjax_like.core import engine, tree  # noqa: I001 (the engine first: values need it)
from fedjax_like.core import cohort
from fedjax_like.core.computation import FederatedComputation, federated_computation
from fedjax_like.core.intrinsics import (
    federated_aggregate,
    federated_broadcast,
    federated_client_keys,
    federated_map,
    federated_max,
    federated_mean,
    federated_min,
    federated_secure_sum,
    federated_secure_sum_bitwidth,
    federated_sum,
    federated_value,
    federated_zip,
    num_real_clients,
)
from fedjax_like.core.placements import (
    CLIENTS,
    SERVER,
    FederatedType,
    FunctionType,
    Placement,
    type_at_clients,
    type_at_server,
)
from fedjax_like.core.sequences import sequence_reduce
from fedjax_like.core.values import FederatedValue

__all__ = [
    'CLIENTS',
    'SERVER',
    'FederatedComputation',
    'FederatedType',
    'FederatedValue',
    'FunctionType',
    'Placement',
    'cohort',
    'engine',
    'federated_aggregate',
    'federated_broadcast',
    'federated_client_keys',
    'federated_computation',
    'federated_map',
    'federated_max',
    'federated_mean',
    'federated_min',
    'federated_secure_sum',
    'federated_secure_sum_bitwidth',
    'federated_sum',
    'federated_value',
    'federated_zip',
    'num_real_clients',
    'sequence_reduce',
    'tree',
    'type_at_clients',
    'type_at_server',
]
