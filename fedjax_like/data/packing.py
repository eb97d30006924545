"""A cohort of client datasets packed into fixed-shape arrays, and checked against a model.

``pack_cohort([client batches...])`` stacks each client's ``[steps, batch, ...]`` arrays into
``[clients, max_steps, batch, ...]``, padding short clients with all-False mask steps. Padding is
inert: a step whose mask is all False leaves the client's weights, optimizer state and metrics
unchanged (see :mod:`fedjax_like.learning.algorithms.fed_avg`).

``pack_groups(datasets, groups)`` packs a ragged cohort as blocks of clients, each padded only to
its own step budget: what ``process.next`` hands the engine, so a cohort whose sizes span 100x
costs close to its real data in host memory, in transfer and on the device, not ``clients x
longest client``. ``take_clients`` cuts such blocks out of an already packed cohort.

``pad_cohort(packed, num_clients)`` appends masked, empty *padding clients* (id
:data:`PADDING_CLIENT_ID`) so cohorts of varying size share a shape (Poisson sampling); a learning
process masks them out of every sum, and validation accepts them (and only them) empty.

``validate_cohort(packed, model)`` is the boundary check before device work: it names the client
and the field when an example's shape or dtype does not match the model's input, a client is empty,
a label is out of range, or a feature holds NaN or infinity. A cohort from :func:`pack_cohort` is
a value: its arrays are read-only, and its check against a model is kept with it, so a cohort
passed every round (a fixed cohort, an evaluation set) is checked once.

:class:`~fedjax_like.data.cohort_source.CohortSource` is how the engine takes a cohort, packed or
as datasets; ``packing.CohortSource`` still names it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax.tree_util as jtu
import numpy as np

from fedjax_like.data.dataset import BatchedDataset

PyTree = Any

#: The id of a padding client added by :func:`pad_cohort` (no examples; masked out of every sum).
PADDING_CLIENT_ID = '<padding>'


@dataclasses.dataclass(frozen=True)
class PackedCohort:
  """A cohort's data as arrays.

  Attributes:
    batches: pytree of ``[num_clients, num_steps, batch_size, ...]`` arrays.
    mask: bool ``[num_clients, num_steps, batch_size]``; False marks padding.
    client_ids: one id per client (``'#i'`` when a dataset carried none).
  """

  batches: PyTree
  mask: np.ndarray
  client_ids: tuple[str, ...]

  @property
  def num_clients(self) -> int:
    return self.mask.shape[0]

  @property
  def num_steps(self) -> int:
    return self.mask.shape[1]

  @property
  def batch_size(self) -> int:
    return self.mask.shape[2]

  @property
  def num_examples(self) -> np.ndarray:
    """``[num_clients]`` real examples per client."""
    return self.mask.sum(axis=(1, 2))

  @property
  def padding_fraction(self) -> float:
    """Masked (wasted) example slots over all slots."""
    return float(1.0 - self.mask.mean()) if self.mask.size else 0.0


def _path_name(path) -> str:
  return jtu.keystr(path) if path else '<example>'


def _client_name(dataset, index: int) -> str:
  client_id = getattr(dataset, 'client_id', None)
  return str(client_id) if client_id is not None else f'#{index}'


def _check_cohort(datasets: Sequence[BatchedDataset]) -> list[str]:
  """The clients' names, after checking that they can be packed together (one structure, one
  batch size, one element shape and dtype per field); errors name the client and the field."""
  if isinstance(datasets, BatchedDataset) or not isinstance(datasets, Sequence):
    raise TypeError(
        'pack_cohort expects a list of client datasets, e.g. [ds.batch(20) for ds in clients]; '
        f'got {type(datasets).__name__}.'
    )
  if not datasets:
    raise ValueError('The cohort is empty: pass at least one client dataset.')
  names = [_client_name(d, i) for i, d in enumerate(datasets)]
  for name, d in zip(names, datasets):
    if not isinstance(d, BatchedDataset):
      raise TypeError(
          f'Client {name}: expected a batched dataset (call .batch(batch_size) on it); '
          f'got {type(d).__name__}.'
      )
  first = datasets[0]
  structure = jtu.tree_structure(first.batches)
  for name, d in zip(names, datasets):
    if jtu.tree_structure(d.batches) != structure:
      raise ValueError(
          f'Client {name}: its examples have structure {jtu.tree_structure(d.batches)} but client '
          f'{names[0]} has {structure}; every client must be preprocessed the same way.'
      )
    if d.batch_size != first.batch_size:
      raise ValueError(
          f'Client {name}: batch size {d.batch_size} differs from client {names[0]} '
          f'({first.batch_size}); batch every client with the same size.'
      )
  reference = jtu.tree_leaves_with_path(first.batches)
  for name, d in zip(names, datasets):
    for (path, want), leaf in zip(reference, jtu.tree_leaves(d.batches), strict=True):
      if leaf.shape[2:] != want.shape[2:] or np.dtype(leaf.dtype) != np.dtype(want.dtype):
        raise ValueError(
            f'Client {name}, field {_path_name(path)}: element shape {leaf.shape[2:]} '
            f'dtype {leaf.dtype} differs from client {names[0]} '
            f'({want.shape[2:]}, {want.dtype}).'
        )
  return names


def stack_clients(datasets: Sequence[BatchedDataset], names: Sequence[str], steps: int
                  ) -> PackedCohort:
  """The clients' batches stacked ``[clients, steps, batch, ...]`` (checked ones: see
  :func:`pack_cohort`), each padded with masked steps to ``steps``."""
  longest = max(d.num_batches for d in datasets)
  if steps < longest:
    raise ValueError(f'num_steps={steps} is smaller than the longest client ({longest} steps).')

  def stack(*leaves):
    out = np.zeros((len(leaves), steps) + leaves[0].shape[1:], dtype=leaves[0].dtype)
    for i, leaf in enumerate(leaves):
      out[i, : leaf.shape[0]] = leaf
    return out

  batches = jtu.tree_map(stack, *(d.batches for d in datasets))
  mask = np.zeros((len(datasets), steps, datasets[0].batch_size), dtype=bool)
  for i, d in enumerate(datasets):
    mask[i, : d.num_batches] = d.mask
  return PackedCohort(_read_only(batches), _read_only(mask), tuple(names))


def _read_only(tree: PyTree) -> PyTree:
  """``tree`` with its arrays made read-only: a packed cohort is a value (its check against a
  model is kept with it, see :mod:`fedjax_like.data.cohort_source`), so changes in place are
  refused."""
  for leaf in jtu.tree_leaves(tree):
    if isinstance(leaf, np.ndarray):
      leaf.flags.writeable = False
  return tree


def pack_cohort(
    datasets: Sequence[BatchedDataset], num_steps: int | None = None
) -> PackedCohort:
  """Stacks client batches into one ``[clients, steps, batch, ...]`` cohort.

  Args:
    datasets: each client's :class:`BatchedDataset` (from ``Dataset.batch``), all with the same
      batch size and example structure.
    num_steps: pad every client to this many steps (default: the longest client's count). Fixing it
      across rounds keeps one compiled program.

  Raises:
    ValueError / TypeError naming the client and field on mismatched structure, batch size or steps.
  """
  names = _check_cohort(datasets)
  steps = max(d.num_batches for d in datasets) if num_steps is None else num_steps
  return stack_clients(datasets, names, steps)


def pack_groups(
    datasets: Sequence[BatchedDataset], groups: Sequence[tuple[Sequence[int], int | None]]
) -> tuple[PackedCohort, ...]:
  """Packs a cohort as several blocks, each padded only to its own clients' step budget.

  ``groups`` lists ``(client indices, num_steps)`` (``num_steps`` None: the block's longest
  client). A ragged cohort packed this way holds close to its real data instead of
  ``clients x longest client`` (5x less for EMNIST-like sizes); the engine runs each block as a
  step group (see :func:`fedjax_like.core.engine.plan_step_groups`). The whole cohort is checked
  first, with :func:`pack_cohort`'s errors.
  """
  names = _check_cohort(datasets)
  parts = []
  for rows, steps in groups:
    members = [datasets[i] for i in rows]
    longest = max(d.num_batches for d in members)
    parts.append(
        stack_clients(members, [names[i] for i in rows], longest if steps is None else steps)
    )
  return tuple(parts)


def pad_cohort(packed: PackedCohort, num_clients: int) -> PackedCohort:
  """``packed`` with padding clients (all-False masks, zero data, id :data:`PADDING_CLIENT_ID`)
  appended up to ``num_clients`` clients; unchanged if it already has that many."""
  extra = int(num_clients) - packed.num_clients
  if extra <= 0:
    return packed

  def pad(x):
    x = np.asarray(x)
    return np.concatenate([x, np.zeros((extra,) + x.shape[1:], x.dtype)])

  return PackedCohort(
      jtu.tree_map(pad, packed.batches),
      pad(packed.mask),
      tuple(packed.client_ids) + (PADDING_CLIENT_ID,) * extra,
  )


def take_clients(packed: PackedCohort, rows, num_steps: int | None = None) -> PackedCohort:
  """The clients ``rows`` of a packed cohort, cut (or padded) to ``num_steps`` steps: a view when
  ``rows`` is a contiguous ascending range and no padding is added. Steps cut away must be
  padding."""
  rows = np.asarray(rows, dtype=np.int64).reshape(-1)
  steps = packed.num_steps if num_steps is None else num_steps
  contiguous = rows.size > 0 and np.array_equal(rows, np.arange(rows[0], rows[0] + rows.size))
  index = slice(int(rows[0]), int(rows[0]) + rows.size) if contiguous else rows
  if packed.mask[index, steps:].any():
    raise ValueError(f'take_clients: num_steps={steps} would cut real steps of these clients.')
  extra = max(steps - packed.num_steps, 0)

  def take(x):
    x = np.asarray(x)[index, :steps]
    if extra:
      x = np.concatenate([x, np.zeros((x.shape[0], extra) + x.shape[2:], x.dtype)], axis=1)
    return x

  return PackedCohort(
      jtu.tree_map(take, packed.batches),
      take(packed.mask),
      tuple(packed.client_ids[i] for i in rows),
  )


def _first_bad_client(bad_per_client: np.ndarray) -> int | None:
  hits = np.flatnonzero(bad_per_client)
  return int(hits[0]) if hits.size else None


def validate_cohort(packed: PackedCohort, model) -> PackedCohort:
  """Checks a packed cohort against ``model.input_spec``; returns it with dtypes made to match.

  Integer features are cast to the model's integer dtype and floating ones to its floating dtype
  (a lossless or standard narrowing); a mismatch of kind (float given for int) or shape is an error.
  """
  from fedjax_like.models.model import split_batch

  x, y = split_batch(packed.batches)
  x_spec, y_spec = model.input_spec
  names = packed.client_ids

  padding = np.array([c == PADDING_CLIENT_ID for c in names], dtype=bool)
  empty = _first_bad_client((packed.num_examples == 0) & ~padding)
  if empty is not None:
    raise ValueError(
        f'Client {names[empty]} has no examples. Remove empty clients from the cohort '
        '(or sample clients with at least one example).'
    )

  def conform(part, path, leaf, spec):
    field = f'{part}{_path_name(path) if path else ""}'
    want_shape, want_dtype = tuple(spec.shape), np.dtype(spec.dtype)
    if tuple(leaf.shape[3:]) != want_shape and want_shape[1:] == tuple(leaf.shape[3:]):
      raise ValueError(
          f"Field {field}: the model's input_spec {want_shape} has a leading batch axis; the "
          f"data's examples are {tuple(leaf.shape[3:])}. input_spec describes one example, "
          f'without the batch axis: build the model with shape {want_shape[1:]}.'
      )
    if tuple(leaf.shape[3:]) != want_shape:
      raise ValueError(
          f'Client {names[0]}, field {field}: element shape {tuple(leaf.shape[3:])} does not match '
          f"the model's input shape {want_shape}. Reshape it in preprocessing, e.g. "
          '.map(lambda e: (e["pixels"].reshape(-1), e["label"])).'
      )
    kind = np.dtype(leaf.dtype).kind
    want_kind = want_dtype.kind
    same_kind = (kind in 'iu' and want_kind in 'iu') or (kind == want_kind == 'f') or kind == want_kind
    if not same_kind:
      raise TypeError(
          f'Client {names[0]}, field {field}: dtype {leaf.dtype} does not match the model\'s '
          f'{want_dtype}. Cast it in preprocessing (e.g. .astype(np.{want_dtype.name})).'
      )
    return leaf.astype(want_dtype, copy=False)

  x = jtu.tree_map_with_path(lambda p, leaf, s: conform('x', p, leaf, s), x, x_spec)
  y = jtu.tree_map_with_path(lambda p, leaf, s: conform('y', p, leaf, s), y, y_spec)

  for path, leaf in jtu.tree_leaves_with_path(x):
    if np.issubdtype(leaf.dtype, np.floating):
      bad = ~np.isfinite(leaf).reshape(leaf.shape[0], -1).all(axis=1)
      client = _first_bad_client(bad)
      if client is not None:
        raise ValueError(
            f'Client {names[client]}, field x{_path_name(path) if path else ""}: contains NaN or '
            'infinite values. Clean or drop them before training.'
        )

  num_classes = model.num_outputs
  for path, leaf in jtu.tree_leaves_with_path(y):
    if np.issubdtype(leaf.dtype, np.integer):
      valid = packed.mask.reshape(packed.mask.shape + (1,) * (leaf.ndim - 3))
      out_of_range = ((leaf < 0) | (leaf >= num_classes)) & valid
      client = _first_bad_client(out_of_range.reshape(leaf.shape[0], -1).any(axis=1))
      if client is not None:
        values = np.unique(leaf[client][out_of_range[client]])
        raise ValueError(
            f'Client {names[client]}, field y{_path_name(path) if path else ""}: labels '
            f'{values[:5].tolist()} are outside [0, {num_classes}) for a model with {num_classes} '
            'outputs.'
        )

  batches = {'x': x, 'y': y} if isinstance(packed.batches, dict) else (x, y)
  return PackedCohort(batches, packed.mask, packed.client_ids)


def __getattr__(name: str):
  """``CohortSource`` under its earlier home (see :mod:`fedjax_like.data.cohort_source`)."""
  if name == 'CohortSource':
    from fedjax_like.data.cohort_source import CohortSource

    return CohortSource
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
