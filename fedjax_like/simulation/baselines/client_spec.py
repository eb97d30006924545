"""``tff.simulation.baselines.ClientSpec``: how a task's client datasets are prepared, and the
shuffle -> repeat -> take that every task applies first.

:func:`shuffle_repeat_take` is the start of each TFF task pipeline: ``shuffle(buffer)`` (skipped
when the buffer is 1), ``repeat(num_epochs)``, ``take(max_elements)``; the task then maps and
batches. Where this differs from TFF: a shuffle here is a full, seeded permutation of the client's
examples, drawn afresh for each epoch (TF's shuffle buffer, smaller than some clients, is not
emulated, nor are its random streams). With ``shuffle_buffer_size=1`` the stored order is kept and
the arrays are TFF's exactly.
"""

from __future__ import annotations

import dataclasses

import jax.tree_util as jtu
import numpy as np

from fedjax_like.data.dataset import Dataset


def _check_positive_int(name: str, value: object, optional: bool) -> None:
  if optional and value is None:
    return
  if isinstance(value, bool) or not isinstance(value, int):
    raise TypeError(f'{name} must be an int{" or None" if optional else ""}; got {value!r}.')
  if value <= 0:
    raise ValueError(f'{name} must be positive. Found {value}.')


@dataclasses.dataclass(frozen=True)
class ClientSpec:
  """Configuration of clients in a baseline task (TFF's fields, defaults and checks).

  Attributes:
    num_epochs: passes over each client's whole local dataset (positive).
    batch_size: examples per batch (positive).
    max_elements: the most examples a client uses, counted after the repeat over ``num_epochs``
      (positive); None uses them all.
    shuffle_buffer_size: the shuffle buffer (positive); None picks the task's default; 1 disables
      shuffling.
  """

  num_epochs: int
  batch_size: int
  max_elements: int | None = None
  shuffle_buffer_size: int | None = None

  def __post_init__(self):
    _check_positive_int('num_epochs', self.num_epochs, optional=False)
    _check_positive_int('batch_size', self.batch_size, optional=False)
    _check_positive_int('max_elements', self.max_elements, optional=True)
    _check_positive_int('shuffle_buffer_size', self.shuffle_buffer_size, optional=True)


def shuffle_repeat_take(
    dataset: Dataset, spec: ClientSpec, default_shuffle_buffer_size: int, seed=None
) -> Dataset:
  """``dataset`` shuffled (a fresh permutation per epoch), repeated, and cut to
  ``spec.max_elements`` examples: TFF's order of operations.

  Args:
    dataset: a client's examples.
    spec: epochs, example cap and shuffle buffer (None: ``default_shuffle_buffer_size``).
    default_shuffle_buffer_size: the task's default buffer.
    seed: seeds the permutations (anything ``np.random.default_rng`` takes; None: fresh).
  """
  buffer = spec.shuffle_buffer_size or default_shuffle_buffer_size
  n = len(dataset)
  rng = np.random.default_rng(seed)
  epochs = [rng.permutation(n) if buffer > 1 else np.arange(n) for _ in range(spec.num_epochs)]
  order = np.concatenate(epochs)
  if spec.max_elements is not None:
    order = order[: spec.max_elements]
  return Dataset(jtu.tree_map(lambda a: a[order], dataset.elements), client_id=dataset.client_id)
