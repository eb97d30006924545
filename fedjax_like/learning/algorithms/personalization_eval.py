"""Personalization evaluation: how much a few local steps improve the global model on each client
(``tff.learning.algorithms.build_personalization_eval_computation``, one personalization strategy).

For global weights ``w`` and client ``i`` with a train split ``T_i`` and a test split ``E_i``:

    baseline_i     = metrics of w on E_i
    w_i            = LocalTraining(w, T_i, client_optimizer) for k steps  (batches of T_i in order,
                                                                           cycling when k > |T_i|)
    personalized_i = metrics of w_i on E_i

Returned as the cohort's metrics (sums over clients and examples divided once, like federated
evaluation) and per client (``[num_clients]`` arrays, in cohort order, with the client ids). It runs
as client loops through the engine (baseline and personalized evaluation over the test split,
fine-tuning over the cycled train split); only metric sums are materialized per client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_like.core import (
    CLIENTS,
    SERVER,
    FederatedValue,
    federated_broadcast,
    federated_map,
    federated_value,
    federated_zip,
)
from fedjax_like.core.engine import ClientLoop
from fedjax_like.data.dataset import BatchedDataset
from fedjax_like.data.packing import PackedCohort
from fedjax_like.learning import optimizers
from fedjax_like.learning.algorithms._common import check_model
from fedjax_like.learning.process import packed_cohort
from fedjax_like.learning.templates.client_works import sum_stored
from fedjax_like.learning.templates.training import (
    EvalCarry,
    eval_step,
    start_training,
    training_step,
)
from fedjax_like.models.model import Model, ModelWeights

PyTree = Any
Cohort = Sequence[BatchedDataset] | PackedCohort


def _cycled(batches: PyTree, mask: jax.Array, num_steps: int) -> tuple[PyTree, jax.Array]:
  """``num_steps`` batches taken in order from a client's real batches, cycling."""
  num_real = jnp.maximum(jnp.sum(jnp.any(mask, axis=1)), 1)
  index = jnp.arange(num_steps) % num_real
  return jax.tree.map(lambda b: b[index], batches), mask[index]


def _eval_loop(model: Model) -> ClientLoop:
  """Metric sums of weights on a client's data; the weights come per client (``client_input``)
  or broadcast (``shared``), whichever is not ``()``."""

  def init(shared, client_input):
    weights = client_input if jax.tree.leaves(client_input) else shared
    return EvalCarry(weights, model.zero_sums())

  return ClientLoop(init, eval_step(model), lambda shared, carry: carry.sums)


def _finetune_loop(model: Model, optimizer) -> ClientLoop:
  """Local training from the broadcast weights; its output is the client's tuned weights."""
  make_optimizer = lambda context: optimizer  # noqa: E731

  def init(weights, key):
    return start_training(model, make_optimizer, weights, key)

  def finish(weights, carry):
    return weights._replace(trainable=carry.params)

  return ClientLoop(init, training_step(model, make_optimizer), finish)


class PersonalizationEval:
  """``evaluate(weights, train_data, test_data) -> metrics``; see build_personalization_eval."""

  def __init__(self, model: Model, optimizer, num_finetune_steps: int, seed: int):
    self.model = model
    self.num_finetune_steps = num_finetune_steps
    base_key = jax.random.key(seed)
    evaluate, finetune = _eval_loop(model), _finetune_loop(model, optimizer)

    def run(weights, train_batches, train_mask, test_batches, test_mask):
      n = train_mask.shape[0]
      keys = jax.random.key_data(jax.random.split(base_key, n))
      cycled = jax.vmap(lambda b, m: _cycled(b, m, num_finetune_steps))(train_batches, train_mask)
      none = federated_value((), CLIENTS)
      at_clients = federated_broadcast(federated_value(weights, SERVER))
      test = FederatedValue((test_batches, test_mask), CLIENTS)
      baseline = federated_map(evaluate, (at_clients, none, test))
      tuned = federated_map(finetune, (at_clients, FederatedValue(keys, CLIENTS),
                                       FederatedValue(cycled, CLIENTS)))
      personalized = federated_map(evaluate, (none, tuned, test))
      per_client_sums = federated_zip((baseline, personalized)).value
      return per_client_sums, sum_stored(per_client_sums)

    self._run = jax.jit(run)

  def __call__(self, weights: ModelWeights, train_data: Cohort, test_data: Cohort) -> dict:
    """Evaluates ``weights`` before and after fine-tuning on each client of the cohort.

    Args:
      weights: the global model's weights.
      train_data: each client's fine-tuning data (batched datasets, or a packed cohort).
      test_data: the same clients' evaluation data, in the same order.

    Returns:
      ``{'baseline_metrics': {...}, 'personalized_metrics': {...}, 'per_client': {'client_ids':
      (...), 'baseline_metrics': {name: [n]}, 'personalized_metrics': {name: [n]}}}``.
    """
    train = packed_cohort(train_data, self.model)
    test = packed_cohort(test_data, self.model)
    if train.client_ids != test.client_ids:
      raise ValueError(
          'train_data and test_data must hold the same clients in the same order; got '
          f'{list(train.client_ids)[:5]} and {list(test.client_ids)[:5]} (first five).'
      )
    (baseline, personalized), (total_base, total_pers) = self._run(
        weights, train.batches, train.mask, test.batches, test.mask
    )
    per_client = lambda sums: jax.tree.map(np.asarray, self.model.finalize_metrics(sums))
    return {
        'baseline_metrics': self.model.finalize_metrics(total_base),
        'personalized_metrics': self.model.finalize_metrics(total_pers),
        'per_client': {
            'client_ids': train.client_ids,
            'baseline_metrics': per_client(baseline),
            'personalized_metrics': per_client(personalized),
        },
    }


def build_personalization_eval(
    model: Model, client_optimizer_fn, num_finetune_steps: int, seed: int = 0
) -> PersonalizationEval:
  """Personalization evaluation with ``num_finetune_steps`` local steps of ``client_optimizer_fn``.

  Args:
    model: the model.
    client_optimizer_fn: the fine-tuning optimizer, e.g. ``build_sgdm(0.05)``.
    num_finetune_steps: ``k``, local steps (one batch each) taken from the client's train split.
    seed: seeds per-client keys for stochastic layers.
  """
  check_model(model)
  if not (isinstance(num_finetune_steps, int) and num_finetune_steps >= 0):
    raise ValueError(f'num_finetune_steps must be an int >= 0; got {num_finetune_steps!r}.')
  optimizer = optimizers.as_transformation(client_optimizer_fn, 'client_optimizer_fn')
  return PersonalizationEval(model, optimizer, num_finetune_steps, seed)
