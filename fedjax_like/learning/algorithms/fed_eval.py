"""Federated evaluation of given weights over a cohort (``tff.learning.algorithms.build_fed_eval``).

Evaluation is a learning process that does not learn:

    weights@SERVER --broadcast--> weights@CLIENTS --eval work--> {metric sums}@CLIENTS
      --federated_sum--> metric sums@SERVER --divide once--> metrics

Every client's whole dataset is evaluated in inference mode; metrics are summed over examples and
clients and divided once (``accuracy = sum correct / sum num_examples``), so client sizes weight
them exactly as if the cohort's data were pooled, and padding never counts. The process state keeps
the running sums, so ``metrics['client_work']['eval']`` holds ``current_round_metrics`` (this
cohort) and ``total_rounds_metrics`` (every cohort since ``initialize``), as TFF's does.

    evaluation = build_fed_eval(model)
    state = evaluation.set_model_weights(evaluation.initialize(), trainer.get_model_weights(s))
    state, metrics = evaluation.next(state, test_cohort)

Composition: broadcast, the ``evaluation`` client work below (its update is empty, ``()``), a mean
aggregator over ``()`` and the identity finalizer.
"""

from __future__ import annotations

import jax.numpy as jnp

from fedjax_like.aggregators.mean import MeanFactory
from fedjax_like.core import tree
from fedjax_like.core.engine import ClientLoop
from fedjax_like.learning.algorithms._common import check_model, initial_weights_fn, weights_type
from fedjax_like.learning.process import LearningProcess
from fedjax_like.learning.templates import (
    ClientOutput,
    ClientResult,
    ClientWorkProcess,
    build_broadcast_process,
    build_client_work,
    build_identity_finalizer,
    compose_learning_process,
)
from fedjax_like.learning.templates.training import EvalCarry, eval_step
from fedjax_like.models.model import Model


def build_eval_client_work(model: Model) -> ClientWorkProcess:
  """Evaluation as client work: metric sums of the broadcast weights on each client's data."""

  def prepare(state, num_clients):
    del num_clients
    return (), ()

  def init(shared, client):
    return EvalCarry(shared[1], model.zero_sums())

  def finish(shared, carry):
    return ClientOutput(ClientResult((), jnp.zeros((), jnp.float32)), carry.sums)

  loop = ClientLoop(init, eval_step(model), finish)

  def report(total_sums, sums):
    new_total = tree.add(total_sums, sums)  # Leaf by leaf (a Metric is a (total, weight) pair).
    eval_metrics = {
        'current_round_metrics': model.finalize_metrics(sums),
        'total_rounds_metrics': model.finalize_metrics(new_total),
    }
    return new_total, {'eval': eval_metrics}

  return build_client_work(model, model.zero_sums, prepare, loop, report, name='evaluation')


def build_fed_eval(model: Model, model_distributor=None, *, runtime=None) -> LearningProcess:
  """A process evaluating ``state.global_model_weights`` on each cohort passed to ``next``.

  Args:
    model: the model.
    model_distributor: a ``DistributionProcess`` (default: broadcast).

  Returns:
    A :class:`~fedjax_like.learning.process.LearningProcess`; set the weights to evaluate with
    ``set_model_weights``. ``next(state, cohort)`` returns metrics with
    ``metrics['client_work']['eval']['current_round_metrics']`` (``loss``, ``accuracy``, ...,
    ``num_examples``) and ``['total_rounds_metrics']``.
  """
  check_model(model)
  weights = weights_type(model)
  return compose_learning_process(
      initial_weights_fn(model, 0),
      model_distributor or build_broadcast_process(weights),
      build_eval_client_work(model),
      MeanFactory(),
      build_identity_finalizer(weights),
      name='fed_eval',
      runtime=runtime,
  )
