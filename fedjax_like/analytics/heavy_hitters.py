"""Federated heavy hitters: the strings most clients hold, found by an iterative trie.

Zhu, Kairouz, McMahan, Sun and Li, 2020 ("Federated Heavy Hitters Discovery with Differential
Privacy"): the server grows a trie of popular prefixes one character per round. In round ``r`` it
broadcasts its candidate prefixes of length ``r``; each client votes, for each of its (distinct,
contribution-bounded) strings that extends a candidate, for the pair (candidate, next character);
the server sums the votes (one ``federated_sum`` of a ``[capacity, alphabet]`` table), records the
strings that end there, and keeps the ``capacity`` most voted extensions (with at least
``threshold`` votes) as the next candidates. No client ever sends a string, only votes.

Guarantees (no noise added, so everything is deterministic):

- a reported count is *exact*: the number of clients whose bounded contribution holds the string;
- a string is found whenever, at every length ``r``, fewer than ``capacity`` other prefixes of that
  length beat its own prefix on votes. A prefix's votes are at least the count of every string
  under it, so with ``c_k`` the k-th largest string count, the top ``k`` are exact as soon as at
  every length at most ``capacity`` prefixes have ``>= c_k`` votes (checked in the tests).

Strings are encoded over a public alphabet as ``int32[max_length]`` codes, 0 marking the end:
:func:`encode_strings` / :func:`decode_strings`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_like.analytics.clipping import client_items
from fedjax_like.core.intrinsics import (
    federated_broadcast,
    federated_map,
    federated_sum,
    federated_value,
)
from fedjax_like.core.placements import SERVER
from fedjax_like.core.values import FederatedValue

ASCII_LOWERCASE = 'abcdefghijklmnopqrstuvwxyz'


def encode_strings(
    strings: Sequence[str], max_length: int, alphabet: str = ASCII_LOWERCASE
) -> np.ndarray:
  """``int32[len(strings), max_length]``: character ``alphabet[i]`` is ``i + 1``; 0 pads.

  Raises:
    ValueError: naming the string, for a character outside ``alphabet`` or a string longer than
      ``max_length``.
  """
  index = {c: i + 1 for i, c in enumerate(alphabet)}
  codes = np.zeros((len(strings), max_length), np.int32)
  for row, s in enumerate(strings):
    if len(s) > max_length:
      raise ValueError(f'encode_strings: {s!r} is longer than max_length={max_length}.')
    for col, c in enumerate(s):
      if c not in index:
        raise ValueError(f'encode_strings: {s!r} holds {c!r}, which is not in the alphabet.')
      codes[row, col] = index[c]
  return codes


def decode_strings(codes: np.ndarray, alphabet: str = ASCII_LOWERCASE) -> list[str]:
  """The strings of ``int32[n, max_length]`` codes (inverse of :func:`encode_strings`)."""
  return [''.join(alphabet[c - 1] for c in row if c > 0) for row in np.asarray(codes)]


class HeavyHitters(NamedTuple):
  """The result at the server.

  Attributes:
    items: ``int32[k, max_length]`` codes, most frequent first.
    counts: ``int32[k]`` clients holding each item (exact); 0 where fewer than ``k`` were found.
    valid: bool ``[k]``.
  """

  items: jax.Array
  counts: jax.Array
  valid: jax.Array


def _client_votes(data, candidates, candidate_valid, length, alphabet_size):
  """One client's ``int32[capacity * alphabet_size]`` votes for (candidate, next symbol)."""
  strings, keep = data
  max_length = strings.shape[1]
  in_prefix = jnp.arange(max_length) < length
  same = (strings[:, None, :] == candidates[None, :, :]) | ~in_prefix
  match = jnp.all(same, axis=-1) & candidate_valid[None, :] & keep[:, None]  # [m, capacity]
  parent = jnp.argmax(match, axis=1)  # candidates are distinct: at most one matches
  symbol = jax.lax.dynamic_index_in_dim(strings, length, axis=1, keepdims=False)
  votes = jnp.zeros((candidates.shape[0] * alphabet_size,), jnp.int32)
  return votes.at[parent * alphabet_size + symbol].add(jnp.any(match, axis=1).astype(jnp.int32))


def federated_heavy_hitters(
    strings: FederatedValue,
    item_mask: FederatedValue | None = None,
    *,
    k: int = 10,
    alphabet_size: int = len(ASCII_LOWERCASE) + 1,
    capacity: int = 64,
    threshold: int = 1,
    max_items_per_client: int | None = None,
) -> FederatedValue:
  """The ``k`` strings held by most clients: ``{int32[m,L]}@CLIENTS -> HeavyHitters@SERVER``.

  Args:
    strings: per-client string codes ``[num_clients, max_items, max_length]`` (from
      :func:`encode_strings`; 0 ends a string).
    item_mask: per-client bool ``[num_clients, max_items]``.
    k: how many to report (``k <= capacity``).
    alphabet_size: codes are in ``[0, alphabet_size)``, 0 being the end marker.
    capacity: prefixes kept per round (the trie's width) and strings remembered.
    threshold: a prefix or string needs at least this many votes.
    max_items_per_client: each client votes for at most its first ``k'`` distinct strings.

  Returns:
    :class:`HeavyHitters` at SERVER.
  """
  if not 1 <= k <= capacity:
    raise ValueError(
        f'federated_heavy_hitters needs 1 <= k <= capacity; got k={k}, capacity={capacity}.'
    )
  data = client_items(
      'federated_heavy_hitters', strings, item_mask, max_items_per_client, distinct=True
  )
  max_length = strings.type_signature.member.shape[-1]
  num_slots = capacity * alphabet_size
  parent = jnp.arange(num_slots) // alphabet_size
  symbol = jnp.arange(num_slots) % alphabet_size

  def grow(length, state):
    candidates, candidate_valid, found, found_counts = state
    server = federated_value((candidates, candidate_valid, length), SERVER)
    votes = federated_sum(
        federated_map(
            lambda d, s: _client_votes(d, *s, alphabet_size), (data, federated_broadcast(server))
        )
    ).value
    extended = candidates[parent].at[:, length].set(symbol)  # [num_slots, max_length]
    enough = votes >= threshold
    ends = (symbol == 0) | (length == max_length - 1)
    all_counts = jnp.concatenate([found_counts, jnp.where(ends & enough, votes, -1)])
    all_found = jnp.concatenate([found, extended])
    best_counts, best = jax.lax.top_k(all_counts, capacity)
    next_counts, next_index = jax.lax.top_k(jnp.where(~ends & enough, votes, -1), capacity)
    return extended[next_index], next_counts >= threshold, all_found[best], best_counts

  start = (
      jnp.zeros((capacity, max_length), jnp.int32),
      jnp.arange(capacity) == 0,  # the empty prefix
      jnp.zeros((capacity, max_length), jnp.int32),
      jnp.full((capacity,), -1, jnp.int32),
  )
  _, _, found, found_counts = jax.lax.fori_loop(0, max_length, grow, start)
  valid = found_counts[:k] >= threshold
  return FederatedValue(
      HeavyHitters(found[:k], jnp.where(valid, found_counts[:k], 0), valid), SERVER
  )
