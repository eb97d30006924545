"""A round's cohort, host side: each client's data made into batches, then packed into arrays.

:class:`ClientPreprocess` turns one client's raw :class:`~fedjax_like.data.Dataset` into what it
trains on in round ``r``: examples mapped to ``(x, y)`` (reshaped to the model's input), optionally
capped to a random subset, repeated for ``num_epochs`` with a fresh shuffle each epoch, and batched.
The shuffle is seeded by ``(run seed, round, client id)`` alone, so a client's batches in a round
are the same in every process, whatever ran before (what makes a resumed run exact).

:func:`pack_round` packs a cohort's batches into ``[clients, steps, batch, ...]`` with the step
count rounded up to a *bucket* (:func:`step_bucket`: 2 sizes per doubling), so the round is
compiled once per bucket rather than once per distinct client size. Padding steps are inert. A
client whose data cannot be read or prepared (a damaged record found when it is first sampled)
raises :class:`ClientDataError` naming the round and the client.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import jax.tree_util as jtu
import numpy as np

from fedjax_like.data.client_data import ClientData
from fedjax_like.data.dataset import BatchedDataset, Dataset
from fedjax_like.data.packing import PackedCohort, pack_cohort
from fedjax_like.models.model import Model

PyTree = Any
_SHUFFLE_STREAM = 0x5F1E


class ClientDataError(ValueError):
  """A sampled client's data could not be read or prepared; names the round and the client."""

  def __init__(self, round_num: int, client_id: str | None, error: BaseException):
    who = f'client {client_id!r}' if client_id is not None else 'the cohort'
    super().__init__(
        f'Round {round_num}: the data of {who} could not be read or prepared: '
        f'{type(error).__name__}: {error}'
    )
    self.round_num, self.client_id, self.error = round_num, client_id, error


def step_bucket(num_steps: int) -> int:
  """The smallest of 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, ... (2 sizes per doubling) that is
  >= ``num_steps``: at most 1.5x padding, and few distinct shapes to compile."""
  num_steps = max(int(num_steps), 1)
  if num_steps <= 2:
    return num_steps
  power = 1 << (num_steps - 1).bit_length()
  return power * 3 // 4 if num_steps <= power * 3 // 4 else power


def to_model_input(model: Model) -> Callable[[PyTree], tuple[Any, Any]]:
  """A vectorized element function from EMNIST-style examples to the model's ``(x, y)``.

  Accepts ``{'pixels': [n, ...], 'label': [n]}`` (TFF's EMNIST layout) or ``(x[n, ...], y[n])``;
  reshapes ``x`` to ``[n, *model x shape]`` and casts to the model's dtypes.
  """
  x_spec, y_spec = model.input_spec

  def element_fn(elements: PyTree) -> tuple[Any, Any]:
    if isinstance(elements, dict) and {'pixels', 'label'} <= set(elements):
      x, y = elements['pixels'], elements['label']
    elif isinstance(elements, (tuple, list)) and len(elements) == 2:
      x, y = elements
    else:
      raise ValueError(
          "Expected examples {'pixels', 'label'} or (x, y) pairs; got "
          f'{jtu.tree_structure(elements)}. Pass an element_fn to ClientPreprocess.'
      )
    x = np.asarray(x).reshape((len(y),) + tuple(x_spec.shape)).astype(x_spec.dtype, copy=False)
    return x, np.asarray(y).astype(y_spec.dtype, copy=False)

  return element_fn


@dataclasses.dataclass(frozen=True)
class ClientPreprocess:
  """What one client trains on in a round: map, cap, repeat with per-epoch shuffles, batch.

  Attributes:
    element_fn: ``elements -> (x[n, ...], y[n])``, applied once to the client's whole arrays.
    batch_size: examples per batch.
    num_epochs: passes over the (capped) data.
    seed: the run seed; with the round and the client id it seeds the shuffles.
    max_examples: keep at most this many examples (a seeded random subset each round), or None.
    shuffle: shuffle each epoch (True, as TFF's baselines do) or keep the stored order.
  """

  element_fn: Callable[[PyTree], PyTree]
  batch_size: int = 20
  num_epochs: int = 1
  seed: int = 0
  max_examples: int | None = None
  shuffle: bool = True

  @classmethod
  def for_model(cls, model: Model, **kwargs) -> ClientPreprocess:
    """EMNIST-style examples reshaped to ``model``'s input (see :func:`to_model_input`)."""
    return cls(to_model_input(model), **kwargs)

  def __call__(self, dataset: Dataset, round_num: int) -> BatchedDataset:
    """The client's batches for round ``round_num``."""
    client_id = dataset.client_id or ''
    mapped = dataset.map(self.element_fn, vectorized=True)
    n = len(mapped)
    rng = np.random.default_rng(
        np.random.SeedSequence(
            [int(self.seed), int(round_num), zlib.crc32(client_id.encode()), _SHUFFLE_STREAM]
        )
    )
    keep = np.arange(n)
    if self.max_examples is not None and n > self.max_examples:
      keep = np.sort(rng.choice(n, self.max_examples, replace=False))
    epochs = [rng.permutation(keep) if self.shuffle else keep for _ in range(self.num_epochs)]
    order = np.concatenate(epochs)
    examples = Dataset(jtu.tree_map(lambda a: a[order], mapped.elements), client_id=client_id)
    return examples.batch(self.batch_size)


def pack_round(
    client_data: ClientData,
    client_ids: Sequence[str],
    round_num: int,
    preprocess: Callable[[Dataset, int], BatchedDataset],
) -> PackedCohort:
  """The cohort of ``round_num`` packed as ``[clients, step_bucket(longest), batch, ...]``."""
  datasets = []
  for client_id in client_ids:
    try:
      datasets.append(preprocess(client_data.dataset_for_client(client_id), round_num))
    except (ValueError, TypeError, KeyError, IndexError, OSError) as e:
      raise ClientDataError(round_num, client_id, e) from e
  longest = max(d.num_batches for d in datasets)
  try:
    return pack_cohort(datasets, num_steps=step_bucket(longest))
  except (ValueError, TypeError) as e:
    raise ClientDataError(round_num, None, e) from e
