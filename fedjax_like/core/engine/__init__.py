"""The engine: the one place that decides how clients execute.

The Federated Core (:mod:`fedjax_like.core`) hands the engine a :class:`Program` (a client loop
or a per-client function bound to its arguments and data) and asks for the clients' outputs
stacked or summed; everything about *how* lives here, one concept a module:

=================  ==============================================================================
``config.py``      :class:`ExecutionConfig` (strategy, chunk, loop form, lowering, devices) and the
                   rule that resolves ``auto``
``program.py``     :class:`ClientLoop` (``init / step / finish``), :class:`Program`, the client's
                   step loop (``while`` / ``scan`` / unrolled)
``plan.py``        cohort plans, functions of the cohort alone: step groups and lanes
``runners.py``     ``vmap``, ``sequential``, ``chunked`` (with step groups); map and sum are one
``lanes.py``       the ``lanes`` runner (clients back to back in vmap lanes), :class:`CohortData`
``place.py``       the device mesh, placing a round's inputs, ``shard_map`` per device
``memory.py``      the memory check before a compiled round runs
``host.py``        the host side of a round: layout, block packing from a ``CohortSource``,
                   placement, compile, call
``stream.py``      streamed cohorts: chunks fed from the host to the compiled round
``lowering.py``    backend lowering of a loop's ``step`` (native / im2col convolutions, pools,
                   native dense products)
``native.py``      building and loading the native CPU kernels (``_conv2d.c``, ``_dense.c``),
                   :func:`native.conv2d`
``dense.py``       dense products on the native kernels and the ``dot_general`` rewrite
``runtime.py``     :class:`Runtime` (config, mesh, planning, placement, compile cache, memory
                   check), :class:`Engine` (what traced values carry), ``execution(...)``
=================  ==============================================================================

The protocol the core uses: ``engine.run(program) -> (summed, stacked)`` (one pass: the program's
output per client is ``(to_sum, to_stack)``; ``engine.map`` and ``engine.sum`` are this call),
:class:`Program`, :func:`combine` and :class:`ClientLoop`. The learning layer hands a round to
``Runtime.run_round`` with a ``CohortSource``.
"""

from fedjax_like.core.engine.config import (
    CONV_LOWERINGS,
    DENSE_LOWERINGS,
    STRATEGIES,
    ExecutionConfig,
    resolve,
)
from fedjax_like.core.engine.lanes import CohortData
from fedjax_like.core.engine.memory import CohortTooLargeError
from fedjax_like.core.engine.plan import (
    LanePlan,
    StepPlan,
    lane_length,
    plan_lanes,
    plan_step_groups,
    step_budget,
)
from fedjax_like.core.engine.program import (
    ClientLoop,
    Program,
    combine,
    data_clients,
    output_type,
    same_data,
)
from fedjax_like.core.engine.runtime import (
    CohortLayout,
    Engine,
    Runtime,
    default_runtime,
    execution,
    using,
)

__all__ = [
    'CONV_LOWERINGS',
    'DENSE_LOWERINGS',
    'STRATEGIES',
    'ClientLoop',
    'CohortData',
    'CohortLayout',
    'CohortTooLargeError',
    'Engine',
    'ExecutionConfig',
    'LanePlan',
    'Program',
    'Runtime',
    'StepPlan',
    'combine',
    'data_clients',
    'default_runtime',
    'execution',
    'lane_length',
    'output_type',
    'plan_lanes',
    'plan_step_groups',
    'resolve',
    'same_data',
    'step_budget',
    'using',
]
