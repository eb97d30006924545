"""``tff.simulation.baselines.BaselineTask``: a task's data, preprocessing and model, together.

A task is :class:`BaselineTaskDatasets` (raw train / test / validation :class:`ClientData` and the
train and eval preprocessing functions) plus ``model_fn`` (a no-argument function returning the
:class:`~fedjax_like.models.model.Model`, with the task's loss and metrics). The ``create_*_task``
functions of each dataset's module build one.

A preprocessing function is ``fn(dataset, seed=None) -> BatchedDataset``: one client's raw
examples in, its batches ``(x[num_batches, batch_size, ...], y[...])`` with a padding mask out;
``seed`` seeds its shuffles (and random crops), so a driver can draw a client's batches afresh each
round, reproducibly.

:meth:`BaselineTask.__post_init__` checks, as TFF does, that the preprocessed examples fit the
model's ``input_spec`` (shapes, and integer versus floating dtypes: TFF's int64 tokens feed the
model's int32 input).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.tree_util as jtu
import numpy as np

from fedjax_like.data.client_data import ClientData
from fedjax_like.data.dataset import BatchedDataset, Dataset
from fedjax_like.models.model import Model

PreprocessFn = Callable[..., BatchedDataset]


def unbatch(batched: BatchedDataset) -> Dataset:
  """The real examples of ``batched``, in order (padding rows dropped)."""
  mask = batched.mask.reshape(-1)
  flat = jtu.tree_map(lambda a: a.reshape((-1,) + a.shape[2:])[mask], batched.batches)
  return Dataset(flat, client_id=batched.client_id)


@dataclasses.dataclass(frozen=True)
class BaselineTaskDatasets:
  """A task's client data and how each client's dataset is preprocessed.

  Attributes:
    train_data: the training clients' raw data.
    test_data: the test clients' raw data.
    validation_data: the validation clients' raw data, or None.
    train_preprocess_fn: ``fn(dataset, seed=None) -> BatchedDataset`` for training clients.
    eval_preprocess_fn: ``fn(dataset, seed=None) -> BatchedDataset`` for evaluation.
  """

  train_data: ClientData
  test_data: ClientData
  validation_data: ClientData | None
  train_preprocess_fn: PreprocessFn
  eval_preprocess_fn: PreprocessFn

  @functools.cached_property
  def element_type_structure(self) -> Any:
    """One preprocessed training example's ``(x, y)`` as ``jax.ShapeDtypeStruct`` (read from the
    first training client with data)."""
    sizes = self.train_data.client_sizes()
    client = next((c for c in self.train_data.client_ids if sizes.get(c, 0) > 0), None)
    if client is None:
      raise ValueError('The task has no training client with examples.')
    return self.train_preprocess_fn(self.train_data.dataset_for_client(client), seed=0).element_spec

  def sample_train_clients(
      self, num_clients: int, replace: bool = False, random_seed: int | None = None
  ) -> list[BatchedDataset]:
    """``num_clients`` random training clients' preprocessed datasets (TFF's method)."""
    rng = np.random.default_rng(random_seed)
    ids = self.train_data.client_ids
    picks = rng.choice(len(ids), size=num_clients, replace=replace)
    datasets = [self.train_data.dataset_for_client(ids[i]) for i in picks]
    return [self.train_preprocess_fn(d, seed=int(rng.integers(2**32))) for d in datasets]

  def get_centralized_test_data(self) -> BatchedDataset:
    """Every test client's examples together, preprocessed for evaluation (TFF's method)."""
    return self.eval_preprocess_fn(self.test_data.create_dataset_from_all_clients())


def _check_fits(element_spec, input_spec) -> None:
  got = jtu.tree_structure(element_spec)
  want = jtu.tree_structure(tuple(input_spec))
  if got != want:
    raise ValueError(f'The preprocessed examples {got} do not have the model\'s structure {want}.')
  for name, have, need in zip(('x', 'y'), element_spec, input_spec, strict=True):
    for h, n in zip(jax.tree.leaves(have), jax.tree.leaves(need), strict=True):
      same_kind = np.issubdtype(h.dtype, np.integer) == np.issubdtype(n.dtype, np.integer)
      if tuple(h.shape) != tuple(n.shape) or not same_kind:
        raise ValueError(
            f'Dataset element spec and model input spec do not match: {name} is '
            f'{h.dtype}{list(h.shape)} after preprocessing, the model expects '
            f'{n.dtype}{list(n.shape)}.'
        )


@dataclasses.dataclass(frozen=True)
class BaselineTask:
  """A baseline learning task: ``datasets`` and ``model_fn`` (no-arg, returns the Model)."""

  datasets: BaselineTaskDatasets
  model_fn: Callable[[], Model]

  def __post_init__(self):
    if not isinstance(self.datasets, BaselineTaskDatasets):
      raise TypeError(f'datasets must be a BaselineTaskDatasets; got {type(self.datasets)}.')
    model = self.model_fn()
    if not isinstance(model, Model):
      raise TypeError(f'Expected model_fn to return a fedjax_like Model; got {type(model)}.')
    _check_fits(self.datasets.element_type_structure, model.input_spec)
