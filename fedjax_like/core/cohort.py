"""Alias of the engine's public names under their earlier home (``fedjax_like.core.cohort``).

The engine is now the package :mod:`fedjax_like.core.engine`; this module keeps the names users
call (``cohort.execution``, ``cohort.ExecutionConfig``, ``cohort.plan_step_groups``, ...) working.
New code should import them from :mod:`fedjax_like.core.engine` (or ``fl.Runtime``).
"""

from fedjax_like.core.engine import (  # noqa: F401
    CONV_LOWERINGS,
    STRATEGIES,
    CohortTooLargeError,
    ExecutionConfig,
    Runtime,
    StepPlan,
    execution,
    plan_lanes,
    plan_step_groups,
    resolve,
    step_budget,
    using,
)
from fedjax_like.core.engine.place import CLIENTS_AXIS, mesh, place_cohort  # noqa: F401
