"""How a client's update is weighted in the server's average (``tff.learning.ClientWeighting``).

- ``ClientWeighting.NUM_EXAMPLES``: ``p_i = n_i``, the examples the client processed;
- ``ClientWeighting.UNIFORM``: ``p_i = 1`` for every client;
- a function ``num_examples -> weight`` (a traced float32 scalar in, a scalar out), e.g.
  ``lambda n: jnp.minimum(n, 100.0)`` to cap the influence of large clients.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import jax
import jax.numpy as jnp


class ClientWeighting(enum.Enum):
  """Built-in client weightings."""

  NUM_EXAMPLES = 'num_examples'
  UNIFORM = 'uniform'


def check_client_weighting(weighting) -> None:
  """Raises a TypeError unless ``weighting`` is a :class:`ClientWeighting` or a function."""
  if not (isinstance(weighting, ClientWeighting) or callable(weighting)):
    raise TypeError(
        'client_weighting must be a ClientWeighting or a function num_examples -> weight; '
        f'got {weighting!r}.'
    )


def client_weight(weighting: ClientWeighting | Callable, num_examples: jax.Array) -> jax.Array:
  """The float32 scalar weight of one client that processed ``num_examples`` examples."""
  if weighting is ClientWeighting.NUM_EXAMPLES:
    return jnp.asarray(num_examples, jnp.float32)
  if weighting is ClientWeighting.UNIFORM:
    return jnp.ones((), jnp.float32)
  return jnp.asarray(weighting(num_examples), jnp.float32)
