"""fedjax_like: federated learning simulation as pure, jit-compiled JAX functions.

Two layers, as in TensorFlow Federated:

- the Federated Learning API (:mod:`fedjax_like.learning`): wrap a Flax model
  (:mod:`fedjax_like.models`), pick an algorithm (``build_weighted_fed_avg``), then ``initialize()`` and
  ``next(state, client_data)``;
- the Federated Core (:mod:`fedjax_like.core`): placements and communication operators
  (broadcast, map, sum, mean) over pure JAX functions, executed by one engine
  (:mod:`fedjax_like.core.engine`); :class:`Runtime` says how (``fl.Runtime('vmap')``), and every
  builder takes one (``build_weighted_fed_avg(..., runtime=...)``).

Federated data lives in :mod:`fedjax_like.data` (``ClientData``, datasets, packing, sources);
the experiment driver (training loop, checkpoints, writers, ``load_run``) in
:mod:`fedjax_like.simulation` (its optional dependencies load only when used).
"""

from fedjax_like import aggregators, analytics, core, data, learning, models, simulation
from fedjax_like.core.engine import Runtime

__version__ = '0.1.0'

__all__ = [
    'Runtime', 'aggregators', 'analytics', 'core', 'data', 'learning', 'models', 'simulation',
    '__version__',
]
