"""``@federated_computation``: a Python function of federated values, typed and compiled once.

As ``@tff.federated_computation``, the decorator takes the placement (or the full federated type)
of each parameter::

    @federated_computation(SERVER, CLIENTS)  # or type_at_server(spec), type_at_clients(spec)
    def mean_shift(shift, x):
      shifted = federated_map(lambda s, xi: xi + s, (federated_broadcast(shift), x))
      return federated_mean(shifted)

    mean_shift(1.0, xs)                     # xs: [num_clients, ...]; returns the server's array
    mean_shift(1.0, xs, client_mask=mask)   # a ragged cohort: mask[i] False for padding clients
    print(mean_shift.type_signature)
    # (<shift=float32@SERVER,x={float32[3]}@CLIENTS> -> float32[3]@SERVER)

Calling it wraps each raw pytree argument into a :class:`~fedjax_like.core.values.FederatedValue`
at its declared placement (per-client arguments carry ``client_mask``), runs the function inside
one ``jax.jit`` (compiled once per argument shapes and engine configuration), checks the returned
placements against ``result=`` when given, and returns raw pytrees: SERVER values as they are,
per-client values stacked ``[num_clients, ...]``.

Placement errors surface when the function is traced, before anything runs: each names the
operator and both types (``federated_sum expects a value of type {T}@CLIENTS; got
float32[3]@SERVER``). Values the function returns that are not federated (arrays computed on the
server from server values) are typed ``@SERVER``.

Clients run through :mod:`fedjax_like.core.engine`, so every execution strategy of the engine
applies; the engine passed as ``engine=`` (else the runtime in force at call time,
``with cohort.execution(...)``) travels with the traced values and is part of the
compilation key, so changing it recompiles instead of silently reusing the old program.

Computations compose: called with federated values (inside another computation) a computation
returns federated values.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from fedjax_like.core.engine import Engine, default_runtime
from fedjax_like.core.passes import PassScope
from fedjax_like.core.placements import (
    CLIENTS,
    SERVER,
    FederatedType,
    FunctionType,
    Placement,
    format_type,
    shape_struct,
    type_of,
)
from fedjax_like.core.values import FederatedValue, engine_of

PyTree = Any
_PLACEHOLDER_COHORT = 2  # clients assumed when a signature is computed from member types alone


def _is_federated(x: Any) -> bool:
  return isinstance(x, FederatedValue)


def _as_type(spec: Any, what: str) -> FederatedType:
  if isinstance(spec, FederatedType):
    return spec
  if isinstance(spec, Placement):
    return FederatedType(None, spec, spec is SERVER)
  raise TypeError(
      f'federated_computation: {what} must be SERVER, CLIENTS or a FederatedType '
      f'(type_at_server(...), type_at_clients(...)); got {spec!r}.'
  )


def _result_type(out: PyTree, top: bool = True) -> Any:
  """The type tree of a returned structure.

  Federated values keep their types; a raw (non-federated) subtree is one SERVER value, except that
  the returned structure itself (``return state, metrics``) is a structure of results, as in TFF:
  ``<<...>@SERVER,<...>@SERVER>``.
  """
  if _is_federated(out):
    return out.type_signature
  is_container = isinstance(out, (Mapping, tuple, list)) and bool(out)
  if not (top and is_container) and not any(
      _is_federated(x) for x in jax.tree.leaves(out, is_leaf=_is_federated)
  ):
    return type_of(out, SERVER, True)
  if isinstance(out, Mapping):
    return type(out)({k: _result_type(v, False) for k, v in out.items()})
  if hasattr(out, '_fields') and isinstance(out, tuple):
    return type(out)(*(_result_type(v, False) for v in out))
  if isinstance(out, (tuple, list)):
    return type(out)(_result_type(v, False) for v in out)
  raise TypeError(
      f'federated_computation results may nest federated values in tuples, lists, dicts and '
      f'NamedTuples; got a {type(out).__name__} holding federated values.'
  )


def _placements_in(type_tree: Any) -> set:
  leaves = jax.tree.leaves(type_tree, is_leaf=lambda t: isinstance(t, FederatedType))
  return {(t.placement, t.all_equal) for t in leaves}


class FederatedComputation:
  """A traced, jit-compiled federated computation. Build it with :func:`federated_computation`.

  Attributes:
    name: the Python function's name.
    parameter_types: ``{name: FederatedType}``; a type's member is None when only its placement was
      declared.
    fn: the undecorated Python function.
  """

  def __init__(
      self, fn: Callable, parameter_specs: tuple, result: Any = None, name: str | None = None
  ):
    self.fn = fn
    self.name = name or getattr(fn, '__name__', 'computation')
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    for reserved in ('client_mask', 'engine'):
      if reserved in {p.name for p in params}:
        raise TypeError(f'{self.name}: the parameter name {reserved} is reserved.')
    if len(params) != len(parameter_specs):
      raise TypeError(
          f'federated_computation for {self.name}{inspect.signature(fn)} declares '
          f'{len(parameter_specs)} parameter type(s) for {len(params)} parameter(s).'
      )
    self.parameter_types = {
        p.name: _as_type(spec, f'the type of parameter {p.name!r}')
        for p, spec in zip(params, parameter_specs)
    }
    is_spec = lambda x: isinstance(x, (Placement, FederatedType))  # noqa: E731
    self._declared_result = (
        None
        if result is None
        else jax.tree.map(lambda s: _as_type(s, 'result'), result, is_leaf=is_spec)
    )
    self._signatures: dict = {}
    self.last_scope: PassScope | None = None  # the latest trace's engine passes
    self._last_signature: FunctionType | None = None
    self._jitted = jax.jit(self._traced, static_argnums=(0,))
    functools.update_wrapper(self, fn)

  # ----- tracing -------------------------------------------------------------------------------

  def _wrap(self, engine: Engine, scope: PassScope, raw: tuple, masks: tuple
            ) -> list[FederatedValue]:
    values = []
    for t, value, mask in zip(self.parameter_types.values(), raw, masks):
      values.append(FederatedValue(value, t.placement, t.all_equal, mask=mask, engine=engine,
                                   scope=scope))
    return values

  def _result_error(self, actual: Any, path: str, promise: Any, hint: str = '') -> TypeError:
    return TypeError(
        f'federated_computation {self.name!r} returns {format_type(actual)} as its '
        f'result{path}, but its signature promises {promise}.{hint}'
    )

  def _check_result(self, declared: Any, actual: Any, path: str) -> None:
    if isinstance(declared, FederatedType):
      bare = declared.member is None
      for placement, all_equal in _placements_in(actual):
        same = placement is SERVER or all_equal == declared.all_equal or bare
        if placement is not declared.placement or not same:
          generic = 'T@SERVER' if declared.placement is SERVER else '{T}@CLIENTS'
          hint = (
              ' Reduce client values with federated_sum, federated_mean or federated_aggregate.'
              if declared.placement is SERVER
              else ''
          )
          raise self._result_error(actual, path, generic if bare else declared, hint)
      if not bare and isinstance(actual, FederatedType) and not declared.is_assignable_from(actual):
        raise self._result_error(actual, path, declared)
      return
    if isinstance(actual, FederatedType) and actual.placement is SERVER:
      # One SERVER value holding a structure satisfies a structure of SERVER placements.
      is_type = lambda t: isinstance(t, FederatedType)  # noqa: E731
      if all(t.placement is SERVER for t in jax.tree.leaves(declared, is_leaf=is_type)):
        return
    if isinstance(declared, Mapping):
      if not isinstance(actual, Mapping) or set(actual) != set(declared):
        raise self._result_error(actual, path, f'a structure with keys {sorted(declared)}')
      for k in declared:
        self._check_result(declared[k], actual[k], f'{path}[{k!r}]')
      return
    if not isinstance(actual, (tuple, list)) or len(actual) != len(declared):
      raise self._result_error(actual, path, f'a {type(declared).__name__} of {len(declared)}')
    for i, (d, a) in enumerate(zip(declared, actual)):
      self._check_result(d, a, f'{path}[{i}]')

  def _traced(self, engine: Engine, raw: tuple, masks: tuple):
    scope = PassScope()
    self.last_scope = scope
    out = self.fn(*self._wrap(engine, scope, raw, masks))
    result_type = _result_type(out)
    if self._declared_result is not None:
      self._check_result(self._declared_result, result_type, '')
    signature = FunctionType(
        {
            name: type_of(r, t.placement, t.all_equal)
            for (name, t), r in zip(self.parameter_types.items(), raw)
        },
        result_type,
    )
    self._signatures[_abstract_key(raw, masks)] = signature
    self._last_signature = signature
    # Every deferred result joins one last pass with whatever reductions are still pending.
    for v in jax.tree.leaves(out, is_leaf=_is_federated):
      if _is_federated(v):
        v.prefetch()
    return jax.tree.map(lambda v: v.value if _is_federated(v) else v, out, is_leaf=_is_federated)

  # ----- calling -------------------------------------------------------------------------------

  def _prepare(self, args: tuple, kwargs: dict, client_mask: Any) -> tuple[tuple, tuple, bool]:
    try:
      bound = inspect.signature(self.fn).bind(*args, **kwargs)
    except TypeError as error:
      raise TypeError(f'{self.name}{inspect.signature(self.fn)}: {error}') from None
    raw, masks, federated_args = [], [], False
    for name, t in self.parameter_types.items():
      if name not in bound.arguments:
        raise TypeError(f'{self.name}: missing the argument {name!r} of type {t}.')
      arg = bound.arguments[name]
      mask = client_mask if t.placement is CLIENTS and not t.all_equal else None
      if _is_federated(arg):
        federated_args = True
        equal_mismatch = t.placement is CLIENTS and arg.all_equal != t.all_equal
        if arg.placement is not t.placement or equal_mismatch:
          raise TypeError(
              f'{self.name}: parameter {name!r} has type {t}; got {arg.type_signature}.'
          )
        mask = arg.mask if arg.mask is not None else mask
        arg = arg.value
      got = type_of(arg, t.placement, t.all_equal)
      if not t.is_assignable_from(got):
        raise TypeError(f'{self.name}: parameter {name!r} has type {t}; got {got}.')
      raw.append(arg)
      masks.append(None if mask is None else jnp.asarray(mask, bool))
    self._check_cohort(raw, masks)
    if client_mask is not None and all(m is None for m in masks):
      raise TypeError(
          f'{self.name}: client_mask given but no parameter is per-client {{T}}@CLIENTS.'
      )
    return tuple(raw), tuple(masks), federated_args

  def _check_cohort(self, raw: list, masks: list) -> None:
    sizes = {}
    for (name, t), value, mask in zip(self.parameter_types.items(), raw, masks):
      if t.placement is CLIENTS and not t.all_equal:
        for leaf in jax.tree.leaves(value):
          if jnp.ndim(leaf):  # scalars (e.g. a streamed cohort's token) have no cohort axis
            sizes.setdefault(jnp.shape(leaf)[0], name)
        if mask is not None:
          sizes.setdefault(jnp.shape(mask)[0], f'client_mask of {name!r}')
    if len(sizes) > 1:
      detail = ', '.join(f'{who}: {n}' for n, who in sizes.items())
      raise ValueError(f'{self.name}: per-client arguments disagree on the cohort size ({detail}).')

  def __call__(self, *args, client_mask: Any = None, engine: Engine | None = None,
               **kwargs) -> PyTree:
    """Runs the computation.

    Args:
      *args, **kwargs: one pytree per parameter: SERVER (and all-equal CLIENTS) values as they are,
        per-client values stacked ``[num_clients, ...]``; or federated values of those types.
      client_mask: optional bool ``[num_clients]`` for every per-client argument: False marks a
        padding client that the reductions ignore.
      engine: the :class:`~fedjax_like.core.engine.Engine` to run the clients with (default: the
        runtime in force at this call, ``with cohort.execution(...)``).

    Returns:
      The function's result with federated values unwrapped to arrays (or, when called with
      federated values, as federated values).
    """
    raw, masks, federated_args = self._prepare(args, kwargs, client_mask)
    engine = engine or engine_of((*args, *kwargs.values())) or default_runtime().engine
    out = self._jitted(engine, raw, masks)
    self._last_signature = self._signatures[_abstract_key(raw, masks)]  # this call's, not the last trace's
    if not federated_args:
      return out
    signature = self._signatures[_abstract_key(raw, masks)]
    cohort_mask = next((m for m in masks if m is not None), None)

    def rewrap(t: FederatedType, value: PyTree) -> FederatedValue:
      mask = cohort_mask if t.placement is CLIENTS and not t.all_equal else None
      return FederatedValue(value, t.placement, t.all_equal, mask=mask)

    return jax.tree.map(
        rewrap, signature.result, out, is_leaf=lambda t: isinstance(t, FederatedType)
    )

  # ----- types ---------------------------------------------------------------------------------

  def signature_for(self, *args, client_mask: Any = None, **kwargs) -> FunctionType:
    """The type signature for these arguments (arrays or ``ShapeDtypeStruct``s), without running."""
    raw, masks, _ = self._prepare(args, kwargs, client_mask)
    jax.eval_shape(functools.partial(self._traced, default_runtime().engine), raw, masks)
    return self._signatures[_abstract_key(raw, masks)]

  @property
  def type_signature(self) -> FunctionType:
    """The :class:`FunctionType` of the latest call, else traced from the declared member types."""
    if self._last_signature is not None:
      return self._last_signature
    missing = [n for n, t in self.parameter_types.items() if t.member is None]
    if missing:
      raise ValueError(
          f'The type signature of {self.name!r} is known once it has been called, or when every '
          f'parameter type names its member (type_at_server(...), type_at_clients(...)); '
          f'{", ".join(missing)} declared only a placement. Use signature_for(*example_args).'
      )
    examples = []
    for t in self.parameter_types.values():
      per_client = t.placement is CLIENTS and not t.all_equal
      lead = (_PLACEHOLDER_COHORT,) if per_client else ()
      example = jax.tree.map(lambda s: jax.ShapeDtypeStruct(lead + s.shape, s.dtype), t.member)
      examples.append(example)
    return self.signature_for(*examples)

  def __repr__(self) -> str:
    if self._last_signature is not None:
      return f'FederatedComputation({self.name}: {self._last_signature})'
    params = ','.join(f'{n}={t}' for n, t in self.parameter_types.items())
    return f'FederatedComputation({self.name}: <{params}> -> ?)'


def _abstract_key(raw: tuple, masks: tuple) -> tuple:
  leaves, treedef = jax.tree.flatten((raw, masks))
  return treedef, tuple((jnp.shape(x), str(shape_struct(x).dtype)) for x in leaves)


def federated_computation(*parameter_types: Any, result: Any = None, name: str | None = None):
  """Decorates a function of federated values into a :class:`FederatedComputation`.

  Args:
    *parameter_types: one per parameter of the function: ``SERVER``, ``CLIENTS`` (per-client
      values), or a :class:`~fedjax_like.core.placements.FederatedType` from
      ``type_at_server(spec)`` / ``type_at_clients(spec, all_equal=False)`` that also fixes the
      member's shapes (then ``type_signature`` is known before the first call and arguments are
      checked against it).
    result: optionally, the placements the function must return: a ``SERVER``/``CLIENTS``/
      ``FederatedType``, or a tuple/dict of them, e.g. ``result=(SERVER, SERVER)``. A structure of
      SERVER values satisfies ``SERVER``. Checked when the function is traced.
    name: shown in errors and ``repr`` (default: the function's name).

  ``@federated_computation`` without arguments decorates a function without parameters.
  """
  if len(parameter_types) == 1 and callable(parameter_types[0]) and not isinstance(
      parameter_types[0], (Placement, FederatedType)
  ):
    return FederatedComputation(parameter_types[0], (), result, name)

  def decorate(fn: Callable) -> FederatedComputation:
    return FederatedComputation(fn, tuple(parameter_types), result, name)

  return decorate
