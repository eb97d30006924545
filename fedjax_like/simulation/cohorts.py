"""A round's cohort, host side: each client's data made into batches, then packed into arrays.

:class:`ClientPreprocess` turns one client's raw :class:`~fedjax_like.data.Dataset` into what it
trains on in round ``r``: examples mapped to ``(x, y)`` (reshaped to the model's input), optionally
capped to a random subset, repeated for ``num_epochs`` with a fresh shuffle each epoch, and batched.
The shuffle is seeded by ``(run seed, round, client id)`` alone, so a client's batches in a round
are the same in every process, whatever ran before (what makes a resumed run exact).

:class:`RoundCohort` is a round's cohort as the training loop hands it to ``process.next``: a
:class:`~fedjax_like.data.cohort_source.CohortSource` that knows each client's step count and
makes a client's batches only when the runtime packs the block (or, for a streamed cohort, the
chunk) it belongs to, so the round's data is copied once, into blocks padded only to their own
budgets, and a cohort larger than host memory never sits on the host at once.

:func:`pack_round` packs a cohort's batches into one ``[clients, steps, batch, ...]`` array with
the step count rounded up to a *bucket* (:func:`step_bucket`: 2 sizes per doubling); kept for
callers that want the arrays themselves.

A client whose data cannot be read or prepared (a damaged record found when it is first sampled)
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
from fedjax_like.data.packing import (
    PADDING_CLIENT_ID,
    PackedCohort,
    pack_cohort,
    stack_clients,
)
from fedjax_like.data.cohort_source import CohortSource
from fedjax_like.models.model import Model

PyTree = Any
_SHUFFLE_STREAM = 0x5F1E


_DATA_ERRORS = (ValueError, TypeError, KeyError, IndexError, OSError)


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
  datasets = [_prepare(preprocess, d, round_num)
              for d in read_clients(client_data, client_ids, round_num)]
  longest = max(d.num_batches for d in datasets)
  try:
    return pack_cohort(datasets, num_steps=step_bucket(longest))
  except (ValueError, TypeError) as e:
    raise ClientDataError(round_num, None, e) from e


def read_clients(client_data: ClientData, client_ids: Sequence[str], round_num: int
                 ) -> list[Dataset]:
  """The clients' datasets, read together (one query for a file-backed source); a client whose
  data cannot be read raises :class:`ClientDataError` naming it (found by reading one by one)."""
  try:
    return client_data.datasets_for_clients(client_ids)
  except _DATA_ERRORS as e:
    for client_id in client_ids:
      try:
        client_data.dataset_for_client(client_id)
      except _DATA_ERRORS as inner:
        raise ClientDataError(round_num, client_id, inner) from inner
    raise ClientDataError(round_num, None, e) from e


def _read_in_slices(client_data: ClientData, client_ids: Sequence[str], round_num: int,
                    size: int = 256):
  """The clients' datasets one at a time, read ``size`` clients at once (a cohort of any size is
  never held on the host whole)."""
  for start in range(0, len(client_ids), size):
    yield from read_clients(client_data, client_ids[start:start + size], round_num)


def _prepare(preprocess, dataset: Dataset, round_num: int) -> BatchedDataset:
  try:
    return preprocess(dataset, round_num)
  except _DATA_ERRORS as e:
    raise ClientDataError(round_num, dataset.client_id, e) from e

class RoundCohort(CohortSource):
  """Round ``round_num``'s cohort, batched on demand (see the module docstring).

  Each client's step count is found by batching it once (clients are read 256 at a time); its
  batches are kept while the cohort's kept batches stay under ``keep_bytes`` (then ``take`` uses
  and drops them), beyond that they are made again when their block is packed (same seed, same
  batches).

  Args:
    client_data: the training clients.
    client_ids: the cohort.
    round_num: the round (it seeds each client's shuffles).
    preprocess: ``(dataset, round_num) -> BatchedDataset`` for one client.
    model: the model the batches are checked against, or None.
    num_padding: empty padding clients appended (masked out of every sum; a cohort of varying
      size padded to a shape on a ladder).
    keep_bytes: host bytes of batches kept from the step count pass.
  """

  def __init__(self, client_data: ClientData, client_ids: Sequence[str], round_num: int,
               preprocess: Callable[[Dataset, int], BatchedDataset], model=None,
               num_padding: int = 0, keep_bytes: int = 256 << 20):
    self.model = model
    self._data, self._round, self._preprocess = client_data, round_num, preprocess
    self._ids = list(client_ids)
    self._kept: dict[int, BatchedDataset] = {}
    steps, kept_bytes, self._step_bytes, self._template = [], 0, 0, None
    for i, dataset in enumerate(_read_in_slices(client_data, self._ids, round_num)):
      batched = _prepare(preprocess, dataset, round_num)
      steps.append(batched.num_batches)
      if self._template is None:
        self._template = batched
        leaves = jtu.tree_leaves((batched.batches, batched.mask))
        self._step_bytes = sum(x.nbytes for x in leaves) // max(batched.num_batches, 1)
      size = self._step_bytes * batched.num_batches
      if kept_bytes + size <= keep_bytes:
        self._kept[i] = batched
        kept_bytes += size
    self.steps = np.asarray(steps + [0] * num_padding, dtype=np.int64)
    self.client_ids = tuple(self._ids) + (PADDING_CLIENT_ID,) * num_padding

  @property
  def step_bytes(self) -> int:
    return self._step_bytes

  def take(self, rows, num_steps: int | None = None):
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    real = [int(r) for r in rows if r < len(self._ids)]
    fresh = [r for r in real if r not in self._kept]
    fresh_ids = [self._ids[r] for r in fresh]
    made = dict(zip(fresh, (_prepare(self._preprocess, d, self._round)
                            for d in read_clients(self._data, fresh_ids, self._round))))
    empty = self._template.batches, self._template.mask[:0]
    members = [self._kept.pop(r) if r in self._kept else made[r] for r in real]  # packed once
    members += [BatchedDataset(jtu.tree_map(lambda x: x[:0], empty[0]), empty[1])
                for _ in range(rows.size - len(real))]
    longest = max(d.num_batches for d in members)
    packed = stack_clients(members, [self.client_ids[r] for r in rows],
                           longest if num_steps is None else num_steps)
    try:
      return self._checked(packed)
    except (ValueError, TypeError) as e:  # validation names the client; the round is added
      raise ClientDataError(self._round, None, e) from e
