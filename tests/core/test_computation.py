"""@federated_computation: signatures, one compilation, placement errors at trace time, masks,
the engine's fused map-reduce, composition, and a FedAvg round written as a computation."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_like.core import (
    CLIENTS,
    SERVER,
    FederatedValue,
    cohort,
    federated_broadcast,
    federated_computation,
    federated_map,
    federated_mean,
    federated_sum,
    federated_value,
    sequence_reduce,
    type_at_clients,
    type_at_server,
)

RNG = np.random.default_rng(0)
XS = RNG.normal(size=(5, 3)).astype(np.float32)


@federated_computation(SERVER, CLIENTS)
def mean_shift(shift, x):
  shifted = federated_map(lambda s, xi: xi + s, (federated_broadcast(shift), x))
  return federated_mean(shifted)


def test_runs_and_prints_its_type_signature():
  np.testing.assert_allclose(mean_shift(1.0, XS), (XS + 1.0).mean(0), rtol=1e-6)
  assert str(mean_shift.type_signature) == (
      '(<shift=float32@SERVER,x={float32[3]}@CLIENTS> -> float32[3]@SERVER)'
  )
  assert 'mean_shift' in repr(mean_shift) and mean_shift.__name__ == 'mean_shift'


def test_declared_member_types_give_the_signature_before_any_call_and_check_arguments():
  @federated_computation(
      type_at_server(jax.ShapeDtypeStruct((3,), jnp.float32)),
      type_at_clients(jax.ShapeDtypeStruct((3,), jnp.float32)),
      result=(SERVER, SERVER),
  )
  def shift_and_count(shift, x):
    shifted = federated_map(lambda s, xi: (xi + s, jnp.ones(())), (federated_broadcast(shift), x))
    total, count = federated_sum(shifted).value
    return total, count

  assert str(shift_and_count.type_signature) == (
      '(<shift=float32[3]@SERVER,x={float32[3]}@CLIENTS> -> <float32[3]@SERVER,float32@SERVER>)'
  )
  total, count = shift_and_count(np.ones(3, np.float32), XS)
  np.testing.assert_allclose(total, (XS + 1).sum(0), rtol=1e-5)
  assert float(count) == 5
  wrong_shape = r"parameter 'x' has type \{float32\[3\]\}@CLIENTS; got \{float32\[4\]\}@CLIENTS"
  with pytest.raises(TypeError, match=wrong_shape):
    shift_and_count(np.ones(3, np.float32), np.zeros((5, 4), np.float32))
  wrong_placement = r"parameter 'shift' has type float32\[3\]@SERVER; got \{float32\[3\]\}@CLIENTS"
  with pytest.raises(TypeError, match=wrong_placement):
    shift_and_count(FederatedValue(XS, CLIENTS), XS)


def test_compiled_once_per_argument_shapes_and_engine_configuration():
  traces = []

  @federated_computation(CLIENTS)
  def total(x):
    traces.append(1)
    return federated_sum(x)

  for _ in range(3):
    np.testing.assert_allclose(total(XS), XS.sum(0), rtol=1e-5)
  assert len(traces) == 1
  with cohort.execution('chunked', chunk_size=2):
    np.testing.assert_allclose(total(XS), XS.sum(0), rtol=1e-5)
  assert len(traces) == 2  # a new configuration recompiles instead of reusing the vmap program
  total(XS[:4])
  assert len(traces) == 3
  # Inside an outer jit (as LearningProcess compiles its round) it inlines into one program.
  np.testing.assert_allclose(jax.jit(lambda x: total(x) * 2)(XS), 2 * XS.sum(0), rtol=1e-5)


def test_placement_errors_are_raised_when_traced_and_name_operator_and_types():
  @federated_computation(SERVER)
  def sum_at_server(x):
    return federated_sum(x)

  expected = r'federated_sum expects a value of type \{T\}@CLIENTS; got float32\[3\]@SERVER'
  with pytest.raises(TypeError, match=expected):
    sum_at_server(np.zeros(3, np.float32))

  @federated_computation(SERVER, CLIENTS)
  def map_over_both(x, y):
    return federated_map(lambda v, w: v + w, (x, y))

  expected = r'federated_map \(argument 0\) expects .*; got float32\[3\]@SERVER\. Use federated_broadcast'
  with pytest.raises(TypeError, match=expected):
    map_over_both(np.zeros(3, np.float32), np.zeros((2, 3), np.float32))

  @federated_computation(CLIENTS, result=SERVER)
  def leaks_client_values(x):
    return federated_map(lambda v: 2 * v, x)

  expected = (
      r"'leaks_client_values' returns \{float32\[3\]\}@CLIENTS as its result, "
      r'but its signature promises T@SERVER'
  )
  with pytest.raises(TypeError, match=expected):
    leaks_client_values(XS)

  @federated_computation(CLIENTS, result={'total': SERVER, 'per_client': CLIENTS})
  def swapped(x):
    return {'total': x, 'per_client': federated_sum(x)}

  expected = (
      r"returns float32\[3\]@SERVER as its result\['per_client'\], "
      r'but its signature promises \{T\}@CLIENTS'
  )
  with pytest.raises(TypeError, match=expected):
    swapped(XS)
  with pytest.raises(TypeError, match='declares 1 parameter type'):
    federated_computation(SERVER)(lambda a, b: a)
  with pytest.raises(TypeError, match='client_mask is reserved'):
    federated_computation(CLIENTS)(lambda client_mask: client_mask)
  with pytest.raises(ValueError, match='Use signature_for'):
    _ = federated_computation(CLIENTS)(lambda x: federated_sum(x)).type_signature


@pytest.mark.parametrize('strategy,chunk', [('vmap', None), ('sequential', None), ('chunked', 2)])
def test_client_mask_makes_padding_clients_inert(strategy, chunk):
  padded = np.concatenate([XS, np.full((3, 3), np.nan, np.float32)])
  mask = np.arange(8) < 5
  with cohort.execution(strategy, chunk_size=chunk):
    out = mean_shift(0.5, padded, client_mask=mask)
  np.testing.assert_allclose(out, (XS + 0.5).mean(0), rtol=1e-5)
  with pytest.raises(ValueError, match='disagree on the cohort size'):
    mean_shift(0.5, padded, client_mask=mask[:5])
  with pytest.raises(TypeError, match='no parameter is per-client'):
    federated_computation(SERVER)(lambda s: s)(1.0, client_mask=mask)


def test_map_then_sum_is_one_fused_call_of_the_engine(monkeypatch):
  from fedjax_like.core.engine import Engine

  calls = []
  original = Engine.run

  def spy(self, program):
    summed, stacked = original(self, program)
    calls.append((len(summed), len(stacked)))
    return summed, stacked

  monkeypatch.setattr(Engine, 'run', spy)

  @federated_computation(SERVER, CLIENTS)
  def weighted_update(w, x):
    out = federated_map(lambda wi, xi: (xi * wi, jnp.sum(xi)), (federated_broadcast(w), x))
    doubled = federated_map(lambda pair: (2 * pair[0], pair[1]), out)
    return federated_sum(doubled)

  weighted_update(np.ones(3, np.float32), XS)
  assert calls == [(1, 0)]


def test_reductions_over_one_client_loop_run_in_one_pass_with_the_loop_run_once(monkeypatch):
  # Two sums, a mean and a stacked read of values derived from ONE client loop: one engine pass,
  # whose combined program steps one carry (the loop's state is not duplicated per request).
  from fedjax_like.core.engine import ClientLoop, Engine

  runs = []
  original = Engine.run

  def spy(self, program):
    runs.append(len({id(p.core) for p in program.parts if p.step is not None}))  # loops run
    return original(self, program)

  monkeypatch.setattr(Engine, 'run', spy)
  loop = ClientLoop(lambda shared, _: jnp.zeros(()),
                    lambda carry, batch, mask: carry + jnp.sum(batch * mask),
                    lambda shared, carry: carry * shared)
  batches = np.arange(24, dtype=np.float32).reshape(4, 3, 2)
  mask = np.ones((4, 3, 2), bool)
  mask[1, 2:] = False

  @federated_computation(SERVER, CLIENTS)
  def stats(scale, data):
    unit = federated_value((), CLIENTS)
    totals = federated_map(loop, (federated_broadcast(scale), unit, data))
    total = federated_sum(totals)
    squares = federated_sum(federated_map(lambda t: t * t, totals))
    mean = federated_mean(totals)
    below = federated_map(lambda t, m: t < m, (totals, federated_broadcast(mean)))
    return total, squares, mean, totals, federated_sum(federated_map(
        lambda b: b.astype(jnp.int32), below))

  total, squares, mean, per_client, below = stats(np.float32(2.0), (batches, mask))
  expected = 2.0 * (batches * mask).sum(axis=(1, 2))
  np.testing.assert_allclose(per_client, expected)
  np.testing.assert_allclose(total, expected.sum())
  np.testing.assert_allclose(squares, (expected ** 2).sum())
  np.testing.assert_allclose(mean, expected.mean())
  assert int(below) == int((expected < expected.mean()).sum())
  # Pass 1: total, squares and mean (the loop stepped once); pass 2: the count below the mean,
  # which needs the mean first, and the stacked totals (again one loop).
  assert runs == [1, 1]


def test_computations_compose():
  @federated_computation(CLIENTS)
  def center(x):
    mean = federated_mean(x)
    return federated_map(lambda m, xi: xi - m, (federated_broadcast(mean), x))

  @federated_computation(CLIENTS)
  def variance(x):
    centered = center(x)  # a computation called with federated values returns federated values
    assert isinstance(centered, FederatedValue) and centered.placement is CLIENTS
    return federated_mean(federated_map(lambda c: c**2, centered))

  np.testing.assert_allclose(variance(XS), XS.var(0), rtol=1e-5)
  mask = np.array([True, True, False, True, True])
  np.testing.assert_allclose(variance(XS, client_mask=mask), XS[mask].var(0), rtol=1e-5)


def test_signature_for_abstract_arguments_and_parameterless_computations():
  spec = jax.ShapeDtypeStruct((7, 3), jnp.float32)
  assert str(mean_shift.signature_for(jax.ShapeDtypeStruct((), jnp.float32), spec)).endswith(
      '-> float32[3]@SERVER)'
  )

  @federated_computation
  def zero():
    return federated_value(jnp.zeros(2, jnp.int32), SERVER)

  np.testing.assert_array_equal(zero(), [0, 0])
  assert str(zero.type_signature) == '( -> int32[2]@SERVER)'


# ----- a FedAvg round as a federated computation, against NumPy ----------------------------------


class ServerState(NamedTuple):
  weights: jax.Array  # [d]
  momentum: jax.Array  # [d]


LR, SERVER_MOMENTUM = 0.1, 0.5


def client_update(weights, data):
  """Local SGD on squared error, one step per batch; padding steps and examples are inert."""
  x, y, mask = data  # [steps, batch, d], [steps, batch], [steps, batch]

  def step(carry, batch):
    w, loss, n = carry
    bx, by, bm = batch
    error = jnp.where(bm, bx @ w - by, 0.0)
    count = jnp.maximum(jnp.sum(bm), 1)
    grad = bx.T @ error / count
    return w - LR * grad, loss + jnp.sum(error**2), n + jnp.sum(bm)

  start = (weights, jnp.zeros(()), jnp.zeros((), jnp.int32))
  local, loss, n = sequence_reduce((x, y, mask), start, step, mask=mask)
  n = n.astype(jnp.float32)
  return {'delta': n * (local - weights), 'weight': n, 'loss': loss}


@federated_computation(SERVER, CLIENTS, result=(SERVER, SERVER))
def fed_avg_round(state, data):
  weights = federated_broadcast(federated_value(state.value.weights, SERVER))
  sums = federated_sum(federated_map(client_update, (weights, data))).value
  mean_delta = sums['delta'] / jnp.maximum(sums['weight'], 1.0)
  momentum = SERVER_MOMENTUM * state.value.momentum + mean_delta
  new_state = ServerState(state.value.weights + momentum, momentum)
  return new_state, {'loss': sums['loss'] / sums['weight'], 'num_examples': sums['weight']}


def numpy_fed_avg_round(w, v, clients):
  deltas, counts, loss = [], [], 0.0
  for x, y in clients:
    local = w.copy()
    for start in range(0, len(x), 4):
      bx, by = x[start : start + 4], y[start : start + 4]
      error = bx @ local - by
      loss += (error**2).sum()
      local = local - LR * bx.T @ error / len(by)
    deltas.append(local - w)
    counts.append(len(x))
  counts = np.array(counts, np.float64)
  mean_delta = sum(c * d for c, d in zip(counts, deltas)) / counts.sum()
  v = SERVER_MOMENTUM * v + mean_delta
  return w + v, v, loss / counts.sum()


def test_fed_avg_round_as_a_federated_computation_matches_numpy():
  rng = np.random.default_rng(1)
  d, steps, batch = 3, 3, 4
  sizes = [12, 5, 9, 1]  # ragged clients; a fifth, padding client below
  clients = [
      (rng.normal(size=(n, d)), rng.normal(size=n)) for n in sizes
  ]
  x = np.zeros((5, steps, batch, d), np.float32)
  y = np.zeros((5, steps, batch), np.float32)
  mask = np.zeros((5, steps, batch), bool)
  for i, (cx, cy) in enumerate(clients):
    flat = np.arange(len(cy))
    x[i].reshape(-1, d)[flat], y[i].reshape(-1)[flat], mask[i].reshape(-1)[flat] = cx, cy, True
  x[4], y[4] = np.nan, np.nan  # the padding client
  client_mask = np.arange(5) < 4

  state = ServerState(np.zeros(d, np.float32), np.zeros(d, np.float32))
  w, v = np.zeros(d), np.zeros(d)
  for _ in range(3):
    state, metrics = fed_avg_round(state, (x, y, mask), client_mask=client_mask)
    w, v, loss = numpy_fed_avg_round(w, v, clients)
    np.testing.assert_allclose(state.weights, w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(metrics['loss'], loss, rtol=1e-4)
    assert float(metrics['num_examples']) == sum(sizes)
  assert str(fed_avg_round.type_signature) == (
      '(<state=<weights=float32[3],momentum=float32[3]>@SERVER,'
      'data={<float32[3,4,3],float32[3,4],bool[3,4]>}@CLIENTS> -> '
      '<<weights=float32[3],momentum=float32[3]>@SERVER,'
      '<loss=float32,num_examples=float32>@SERVER>)'
  )


def test_type_signature_follows_the_latest_call_not_the_latest_trace():
  import numpy as np

  from fedjax_like.core import CLIENTS, federated_computation, federated_sum

  @federated_computation(CLIENTS)
  def total(x):
    return federated_sum(x)

  total(np.ones((2, 3), np.float32))
  total(np.ones((2, 5), np.float32))
  total(np.ones((2, 3), np.float32))  # cached: not traced again
  assert str(total.type_signature) == '({float32[3]}@CLIENTS -> float32[3]@SERVER)'
