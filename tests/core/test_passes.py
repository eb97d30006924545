"""Engine passes: lazy reductions of one computation run together, each loop once."""

import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_like.core import CLIENTS, SERVER, FederatedValue, federated_map, federated_sum
from fedjax_like.core.engine import Engine, ExecutionConfig, Program
from fedjax_like.core.passes import PassScope, run_now


def _values(scope):
  xs = np.arange(12, dtype=np.float32).reshape(4, 3)
  return FederatedValue(xs, CLIENTS, engine=Engine(ExecutionConfig('vmap')), scope=scope), xs


def test_sums_are_lazy_until_read_then_run_in_one_pass():
  scope = PassScope()
  x, xs = _values(scope)
  total = federated_sum(x)
  squares = federated_sum(federated_map(lambda v: v * v, x))
  assert total.is_lazy and squares.is_lazy and scope.passes == []
  assert total.type_signature.member.shape == (3,)  # known without running anything
  np.testing.assert_allclose(total.value, xs.sum(0))
  assert len(scope.passes) == 1 and len(scope.passes[0]) == 2
  np.testing.assert_allclose(squares.value, (xs * xs).sum(0))  # already run: no new pass
  assert len(scope.passes) == 1


def test_server_side_maps_stay_lazy_and_a_stacked_read_joins_the_pass():
  scope = PassScope()
  x, xs = _values(scope)
  doubled = federated_map(lambda v: 2 * v, x)
  mean = federated_map(lambda s: s / 4, federated_sum(doubled))
  assert mean.placement is SERVER and mean.is_lazy
  doubled.prefetch(label='who stacks')
  np.testing.assert_allclose(mean.value, 2 * xs.mean(0))
  np.testing.assert_allclose(doubled.value, 2 * xs)
  assert len(scope.passes) == 1
  assert scope.stacked_by == ('who stacks',)


def test_without_a_scope_a_request_runs_at_once():
  xs = np.ones((3, 2), np.float32)
  out = run_now(Program.of_function(lambda v: v * 3, (xs,), (0,)), 'sum', Engine())
  np.testing.assert_allclose(out, [9.0, 9.0])
  eager = federated_sum(FederatedValue(xs, CLIENTS))
  assert not eager.is_lazy


def test_labeled_blocks_name_their_stack_requests_and_bad_reduce_is_refused():
  scope = PassScope()
  x, _ = _values(scope)
  with scope.labeled('the aggregator X'):
    _ = federated_map(lambda v: v + 1, x).value
  _ = federated_map(lambda v: v - 1, x).value
  assert scope.stacked_by == ('the aggregator X',)
  with pytest.raises(ValueError, match="'sum' or 'stack'"):
    scope.request(Program.of_function(lambda v: v, (jnp.ones(2),), (0,)), 'max', Engine())
