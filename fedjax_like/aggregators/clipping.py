"""Clipping and zeroing of large client values before an inner aggregation, as ``tff.aggregators``.

``clipping_factory(clipping_norm, inner_agg_factory)`` projects each client's value onto the L2
ball of radius ``C`` (the global norm over the whole pytree, in float32):

    x <- x / (||x||_2 / C)   if ||x||_2 > C,   else x                 (weights unchanged)

``zeroing_factory(zeroing_norm, inner_agg_factory, norm_order=math.inf)`` replaces a value whose
norm (L1, L2 or, by default, L-infinity: the largest ``|x_j|`` over all coordinates) exceeds ``Z``
by zeros; **the weight is kept**, so a weighted mean with much zeroing is pulled toward 0 (TFF's
choice, for consistency between weighted and unweighted aggregation).

Both trigger on a strict ``>``. A norm is a float (fixed) or an
:class:`~fedjax_like.aggregators.estimation.EstimationProcess` (adaptive, e.g.
``PrivateQuantileEstimationProcess.no_noise(...)``): the round uses ``report(state)`` and the
process's ``next`` then sees every client's norm. The result takes its weightedness from the inner
factory. Measurements, in TFF's nesting::

    {clipping: <inner's>, clipping_norm: C used this round, clipped_count: int32}
    {zeroing:  <inner's>, zeroing_norm:  Z used this round, zeroed_count:  int32}

and the state is ``{clipping_norm: <norm process state>, inner_agg: ..., clipped_count_agg: ...}``
(``zeroing_norm``, ``inner_agg``, ``zeroed_count_agg``).

**Non-finite values** (a NaN or inf anywhere in the client's value) are zeroed and counted in
``clipped_count`` / ``zeroed_count``. This departs from TFF, where a NaN norm compares false, so
the NaN value passes through unclipped and poisons the sum. The norm the estimation process sees
is the computed one (NaN or inf), which it counts as above the estimate, as TFF does.

When the inner aggregation, the norm process and the count sum all come in map-reduce form, so
does the wrapper (client work: norm, clip, then the inner work; one ``federated_sum``), and a
learning process fuses it into the round. Otherwise ``next`` is written with the intrinsics: clip
by ``federated_map``, then the inner aggregator's, the norm's and the count's own ``next``. An
inner aggregation with client state (top-k with error feedback) makes the wrapper one too: it has
the inner's ``initial_client_state`` and passes the client states through.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from fedjax_like.aggregators.estimation import EstimationProcess, as_norm_process
from fedjax_like.aggregators.factory import (
    AggregationProcess,
    ClientStatesOutput,
    MapReduceForm,
    MeasuredProcessOutput,
    build_map_reduce_aggregation,
    call_next,
    format_type,
    ready,
    tensor_type,
)
from fedjax_like.aggregators.sum_factory import SumFactory
from fedjax_like.core import (
    SERVER,
    FederatedValue,
    federated_broadcast,
    federated_map,
    federated_value,
    tree,
)

PyTree = Any
NORM_DTYPE = jnp.float32
COUNT_DTYPE = jnp.int32
# (value, norm) -> (new value, the value's norm in float32, int32 1 if changed)
TransformFn = Callable[[PyTree, jax.Array], tuple[PyTree, jax.Array, jax.Array]]


def global_l2_norm(value: PyTree) -> jax.Array:
  """``sqrt(sum_j x_j^2)`` over all leaves together, computed in float32."""
  leaves = [jnp.asarray(x).astype(NORM_DTYPE) for x in jax.tree.leaves(value)]
  return jnp.sqrt(sum((jnp.sum(jnp.square(x)) for x in leaves), jnp.zeros((), NORM_DTYPE)))


def global_l1_norm(value: PyTree) -> jax.Array:
  """``sum_j |x_j|`` over all leaves together, in float32."""
  leaves = [jnp.asarray(x).astype(NORM_DTYPE) for x in jax.tree.leaves(value)]
  return sum((jnp.sum(jnp.abs(x)) for x in leaves), jnp.zeros((), NORM_DTYPE))


def global_inf_norm(value: PyTree) -> jax.Array:
  """``max_j |x_j|`` over all leaves together, in float32 (NaN if any coordinate is NaN)."""
  leaves = [jnp.asarray(x).astype(NORM_DTYPE) for x in jax.tree.leaves(value)]
  return jnp.max(jnp.stack([jnp.max(jnp.abs(x), initial=0.0) for x in leaves]))


def clip_by_global_l2_norm(value: PyTree, clip: jax.Array) -> tuple[PyTree, jax.Array, jax.Array]:
  """Clips ``value`` to global L2 norm ``clip``; a non-finite value becomes zeros.

  Returns:
    ``(clipped value, its norm before clipping (float32), int32 1 if it was clipped or zeroed)``.
  """
  norm = global_l2_norm(value)
  finite = tree.all_finite(value)
  clipped = norm > clip
  divisor = jnp.where(clipped & finite, norm / clip, 1.0)
  out = jax.tree.map(lambda x: (x / divisor.astype(x.dtype)).astype(x.dtype), value)
  out = tree.where(finite, out, tree.zeros_like(value))
  return out, norm, (clipped | ~finite).astype(COUNT_DTYPE)


def _zero_fn(norm_order: float) -> TransformFn:
  norm_fn = {1.0: global_l1_norm, 2.0: global_l2_norm}.get(norm_order, global_inf_norm)

  def zero(value, zeroing_norm):
    norm = norm_fn(value)
    should_zero = (norm > zeroing_norm) | ~tree.all_finite(value)
    out = tree.where(should_zero, tree.zeros_like(value), value)
    return out, norm, should_zero.astype(COUNT_DTYPE)

  return zero


def _check_value_type(value_type: PyTree, who: str) -> None:
  leaves = jax.tree.leaves(value_type)
  if not leaves or not all(jnp.issubdtype(x.dtype, jnp.floating) for x in leaves):
    raise TypeError(
        f'{who} needs floating-point values; got the value type {format_type(value_type)}. '
        'Aggregate integer values with SumFactory or a mean instead.'
    )


def _check_factory(factory, what: str, unweighted: bool = False) -> None:
  if not hasattr(factory, 'create') or not hasattr(factory, 'is_weighted'):
    raise TypeError(
        f'{what} must be an aggregation factory (with create(value_type) and is_weighted), e.g. '
        f'MeanFactory(); got {type(factory).__name__}.'
    )
  if unweighted and factory.is_weighted:
    raise TypeError(f'{what} must be an unweighted factory such as SumFactory(); got {factory!r}.')


class _NormWrapperFactory:
  """A factory applying a per-client ``transform`` (clip or zero) before an inner aggregation."""

  def __init__(
      self,
      norm: float | EstimationProcess,
      inner_agg_factory,
      count_sum_factory,
      transform: TransformFn,
      prefix: str,
      description: str,
  ):
    self._norm_process = as_norm_process(norm, f'{prefix}ing_norm')
    self._inner = inner_agg_factory
    self._count = count_sum_factory
    self._transform = transform
    self._prefix = prefix
    self._description = description
    self.is_weighted = bool(inner_agg_factory.is_weighted)

  def __repr__(self) -> str:
    return self._description

  def create(self, value_type: PyTree) -> AggregationProcess:
    """The process for client values of ``value_type`` (a pytree of floating types)."""
    value_type = tensor_type(value_type)
    name = f'{self._prefix}ing'
    _check_value_type(value_type, f'{self._prefix}ing_factory')
    inner = self._inner.create(value_type)
    count = self._count.create(jax.ShapeDtypeStruct((), COUNT_DTYPE))
    norm_process = self._norm_process
    keys = (f'{self._prefix}ing_norm', 'inner_agg', f'{self._prefix}ed_count_agg')

    def initialize():
      return dict(zip(keys, (norm_process.initialize(), inner.initialize(), count.initialize())))

    def measurements(inner_measurements, norm_used, count_result):
      return {
          f'{self._prefix}ing': inner_measurements,
          f'{self._prefix}ing_norm': norm_used,
          f'{self._prefix}ed_count': count_result,
      }

    forms = (norm_process.map_reduce, inner.map_reduce, count.map_reduce)
    if all(f is not None for f in forms):
      form = _wrapper_form(self._transform, norm_process, inner, count, keys, measurements)
      return build_map_reduce_aggregation(initialize, form, value_type, self.is_weighted, name)
    transform = self._transform

    def next_fn(state, value: FederatedValue, weight: FederatedValue | None = None,
                client_states: FederatedValue | None = None):
      norm_state, inner_state, count_state = (state[k] for k in keys)
      norm_used = jnp.asarray(norm_process.report(norm_state), NORM_DTYPE)
      at_clients = federated_broadcast(federated_value(norm_used, SERVER))
      transformed = federated_map(transform, (value, at_clients))
      new_value, norms, changed = transformed[0], transformed[1], transformed[2]
      new_norm_state = norm_process.next(norm_state, norms)
      inner_out, new_client_states = call_next(inner, inner_state, new_value, weight,
                                               client_states)
      count_out = count.next(count_state, changed)
      new_state = dict(zip(keys, (new_norm_state, inner_out.state, count_out.state)))
      measured = measurements(inner_out.measurements, norm_used, ready(count_out.result))
      if inner.initial_client_state is None:
        return MeasuredProcessOutput(new_state, inner_out.result, measured)
      return ClientStatesOutput(new_state, inner_out.result, measured, new_client_states)

    return AggregationProcess(initialize, next_fn, value_type, self.is_weighted, None, name,
                              inner.initial_client_state)


def _wrapper_form(transform, norm_process, inner, count, keys, measurements) -> MapReduceForm:
  """The wrapper's map-reduce form from the norm's, the inner aggregator's and the count's."""
  norm_form, inner_form, count_form = norm_process.map_reduce, inner.map_reduce, count.map_reduce

  def prepare(state):
    norm_state, inner_state, count_state = (state[k] for k in keys)
    norm_used = jnp.asarray(norm_process.report(norm_state), NORM_DTYPE)
    own = (norm_used, norm_form.prepare(norm_state), count_form.prepare(count_state))
    return own, inner_form.prepare(inner_state)

  def work(prepared, value, weight):
    (norm_used, norm_b, count_b), inner_b = prepared
    new_value, norm, changed = transform(value, norm_used)
    return (
        inner_form.work(inner_b, new_value, weight),
        norm_form.work(norm_b, norm),
        count_form.work(count_b, changed, None),
    )

  def report(state, summed):
    norm_state, inner_state, count_state = (state[k] for k in keys)
    inner_summed, norm_summed, count_summed = summed
    inner_out = inner_form.report(inner_state, inner_summed)
    count_out = count_form.report(count_state, count_summed)
    new_state = dict(
        zip(keys, (norm_form.update(norm_state, norm_summed), inner_out.state, count_out.state))
    )
    norm_used = jnp.asarray(norm_process.report(norm_state), NORM_DTYPE)
    measured = measurements(inner_out.measurements, norm_used, count_out.result)
    return MeasuredProcessOutput(new_state, inner_out.result, measured)

  return MapReduceForm(prepare, work, report)


def clipping_factory(
    clipping_norm: float | EstimationProcess,
    inner_agg_factory,
    clipped_count_sum_factory=None,
):
  """L2 clipping before ``inner_agg_factory`` (``tff.aggregators.clipping_factory``).

  Args:
    clipping_norm: a positive float (fixed norm) or an :class:`EstimationProcess` whose
      ``report`` is the norm (adaptive, e.g. ``PrivateQuantileEstimationProcess.no_noise``).
    inner_agg_factory: the aggregation of the clipped values (e.g. ``MeanFactory()``); the result
      is weighted when it is.
    clipped_count_sum_factory: an unweighted factory summing the int32 ``clipped_count``
      (default ``SumFactory()``).

  Returns:
    A factory whose processes report ``{clipping, clipping_norm, clipped_count}``.

  Raises:
    ValueError: a float ``clipping_norm`` that is not positive and finite.
    TypeError: a norm or factory of the wrong kind.
  """
  _check_factory(inner_agg_factory, 'inner_agg_factory')
  count = SumFactory() if clipped_count_sum_factory is None else clipped_count_sum_factory
  _check_factory(count, 'clipped_count_sum_factory', unweighted=True)
  return _NormWrapperFactory(
      clipping_norm,
      inner_agg_factory,
      count,
      clip_by_global_l2_norm,
      'clipp',
      f'clipping_factory({clipping_norm!r}, {inner_agg_factory!r})',
  )


def zeroing_factory(
    zeroing_norm: float | EstimationProcess,
    inner_agg_factory,
    norm_order: float = math.inf,
    zeroed_count_sum_factory=None,
):
  """Zeroing of values with a large norm before ``inner_agg_factory`` (``tff.aggregators``).

  Args:
    zeroing_norm: a positive float (fixed norm) or an :class:`EstimationProcess` whose ``report``
      is the norm (adaptive).
    inner_agg_factory: the aggregation of the values after zeroing; the result is weighted when it
      is. A zeroed client keeps its weight.
    norm_order: 1.0, 2.0 or ``math.inf`` (default: the largest absolute coordinate).
    zeroed_count_sum_factory: an unweighted factory summing the int32 ``zeroed_count`` (default
      ``SumFactory()``).

  Returns:
    A factory whose processes report ``{zeroing, zeroing_norm, zeroed_count}``.

  Raises:
    ValueError: a ``norm_order`` other than 1, 2 or infinity; a float ``zeroing_norm`` that is not
      positive and finite.
    TypeError: a norm or factory of the wrong kind.
  """
  _check_factory(inner_agg_factory, 'inner_agg_factory')
  count = SumFactory() if zeroed_count_sum_factory is None else zeroed_count_sum_factory
  _check_factory(count, 'zeroed_count_sum_factory', unweighted=True)
  if isinstance(norm_order, bool) or not isinstance(norm_order, (int, float)):
    raise TypeError(f'norm_order must be 1.0, 2.0 or math.inf; got {norm_order!r}.')
  if not (norm_order in (1.0, 2.0) or norm_order == math.inf):
    raise ValueError(
        f'norm_order must be 1.0, 2.0 or math.inf (the L1, L2 or L-infinity norm); got '
        f'{norm_order}.'
    )
  return _NormWrapperFactory(
      zeroing_norm,
      inner_agg_factory,
      count,
      _zero_fn(float(norm_order)),
      'zero',
      f'zeroing_factory({zeroing_norm!r}, {inner_agg_factory!r}, norm_order={norm_order})',
  )
