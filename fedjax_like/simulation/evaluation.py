"""Federated evaluation of the global model on a fixed set of test clients, for the training loop.

:class:`FederatedEvaluation` runs ``learning.algorithms.build_fed_eval`` (TFF's
``build_fed_eval``) over every test client: metric sums over all their examples, divided once, so
``eval/accuracy`` is the example-weighted accuracy over the test clients, as TFF reports it.

The test clients are preprocessed and packed once, at construction: grouped by size into chunks
of at most ``clients_per_chunk`` clients that share a shape, a small client getting a small batch
(its size rounded up to a bucket, :func:`~fedjax_like.simulation.cohorts.step_bucket`) rather than
``batch_size`` slots of padding. A whole evaluation is a handful of compiled calls on arrays that
never change. Calling it dispatches device work and returns device
scalars without waiting (JAX dispatch is asynchronous); the loop reads them when it logs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from fedjax_like.data.client_data import ClientData
from fedjax_like.data.dataset import Dataset
from fedjax_like.data.packing import PackedCohort, pack_cohort
from fedjax_like.learning.algorithms import build_fed_eval
from fedjax_like.models.model import Model, ModelWeights
from fedjax_like.simulation.cohorts import step_bucket, to_model_input

PyTree = Any


class FederatedEvaluation:
  """``evaluate(weights) -> {'accuracy', 'loss', ..., 'num_examples'}`` over the test clients.

  Args:
    model: the model being trained.
    test_data: the test clients' raw data.
    batch_size: evaluation batch size.
    client_ids: which test clients (default: every client with at least one example).
    element_fn: ``elements -> (x, y)`` (vectorized); default reshapes EMNIST-style examples to the
      model's input (:func:`~fedjax_like.simulation.cohorts.to_model_input`).
    clients_per_chunk: clients evaluated by one compiled call.
    preprocess: ``dataset -> Dataset`` of a test client's ``(x, y)`` examples (a task's
      evaluation preprocessing, which may change the number of examples, e.g. text cut into
      rows); when given it replaces ``element_fn``.
  """

  def __init__(
      self,
      model: Model,
      test_data: ClientData,
      batch_size: int = 100,
      client_ids: Sequence[str] | None = None,
      element_fn: Callable[[PyTree], PyTree] | None = None,
      clients_per_chunk: int = 256,
      preprocess: Callable[[Dataset], Dataset] | None = None,
  ):
    if preprocess is None:
      element_fn = element_fn or to_model_input(model)
      preprocess = lambda raw: raw.map(element_fn, vectorized=True)  # noqa: E731
    ids = list(test_data.client_ids if client_ids is None else client_ids)
    groups: dict[tuple[int, int], list[Dataset]] = {}
    for client_id in ids:
      raw = test_data.dataset_for_client(client_id)
      mapped = Dataset(preprocess(raw).elements, client_id=client_id) if len(raw) else None
      if mapped is not None and len(mapped):
        shape = _eval_shape(len(mapped), batch_size)
        groups.setdefault(shape, []).append(mapped)
    if not groups:
      raise ValueError('FederatedEvaluation: none of the test clients has an example.')
    self.num_clients = sum(len(g) for g in groups.values())
    self.num_examples = sum(len(d) for g in groups.values() for d in g)
    self._chunks: list[PackedCohort] = []
    for (steps, batch), members in sorted(groups.items()):
      for start in range(0, len(members), clients_per_chunk):
        chunk = [d.batch(batch) for d in members[start : start + clients_per_chunk]]
        self._chunks.append(pack_cohort(chunk, num_steps=steps))
    self._process = build_fed_eval(model)
    self._initial_state = self._process.initialize()

  def __call__(self, weights: ModelWeights) -> dict[str, jax.Array]:
    """Example-weighted metrics of ``weights`` on the test clients (device scalars, not awaited)."""
    state = self._process.set_model_weights(self._initial_state, weights)
    metrics = None
    for chunk in self._chunks:
      state, metrics = self._process.next(state, chunk)
    return dict(metrics['client_work']['eval']['total_rounds_metrics'])


def _eval_shape(num_examples: int, batch_size: int) -> tuple[int, int]:
  """``(steps, batch)`` a client of ``num_examples`` is evaluated with: small clients get a small
  (bucketed) batch instead of being padded to ``batch_size``."""
  batch = min(batch_size, step_bucket(num_examples))
  return step_bucket(-(-num_examples // batch)), batch


def sample_test_clients(test_data: ClientData, num_clients: int | None, seed: int) -> list[str]:
  """A fixed, seeded subset of ``num_clients`` test client ids (all of them when None)."""
  ids = test_data.client_ids
  if num_clients is None or num_clients >= len(ids):
    return ids
  picks = np.random.default_rng(np.random.SeedSequence([int(seed), 0xE7A1])).choice(
      len(ids), num_clients, replace=False
  )
  return [ids[i] for i in sorted(picks)]
