"""Federated analytics on the Federated Core: statistics of client data that is never collected.

Each analytic is a function of federated values (usable inside a ``@federated_computation``) whose
clients send only aggregates -- bin counts, threshold counts, votes, sketches -- and whose client
contributions are bounded (``max_items_per_client``, distinct items) before anything leaves them:

- :func:`federated_histogram`: counts per bin, exact;
- :func:`federated_item_mean`: the mean of clipped values, exact;
- :func:`federated_quantiles`: binary search with federated counts, within
  ``(b - a) / 2**num_rounds`` of the true quantile;
- :func:`federated_heavy_hitters`: the most common strings by an iterative trie, exact counts;
- :func:`count_sketch_heavy_hitters`: the most common integer items by a count sketch.
"""

from fedjax_like.analytics.clipping import bound_contributions
from fedjax_like.analytics.count_sketch import (
    CountSketchHeavyHitters,
    count_sketch_error_bound,
    count_sketch_heavy_hitters,
)
from fedjax_like.analytics.heavy_hitters import (
    HeavyHitters,
    decode_strings,
    encode_strings,
    federated_heavy_hitters,
)
from fedjax_like.analytics.histogram import federated_histogram, federated_item_mean
from fedjax_like.analytics.quantiles import federated_quantiles, quantile_error_bound

__all__ = [
    'CountSketchHeavyHitters',
    'HeavyHitters',
    'bound_contributions',
    'count_sketch_error_bound',
    'count_sketch_heavy_hitters',
    'decode_strings',
    'encode_strings',
    'federated_heavy_hitters',
    'federated_histogram',
    'federated_item_mean',
    'federated_quantiles',
    'quantile_error_bound',
]
