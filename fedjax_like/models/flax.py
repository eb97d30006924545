"""Adapters from Flax modules (``flax.linen`` and ``flax.nnx``) to a pure :class:`Model`.

The module is turned into pure functions once, here; nothing downstream holds the module object.

- ``from_linen(module, input_spec)``: weights are the ``'params'`` collection from ``module.init``.
  Modules with mutable collections (BatchNorm's ``batch_stats``) are refused with a clear error:
  aggregating running statistics across clients is not supported yet.
- ``from_nnx(module_or_factory, input_spec)``: the module is split with ``nnx.split`` into a graph
  definition and state; ``nnx.Param`` variables are trainable, the rest non-trainable. Weights are
  held as plain nested dicts of arrays (``State.to_pure_dict``), the same layout linen uses, and
  merged back into the module's graph inside the compiled apply. Pass a factory
  ``lambda rngs: MyModule(..., rngs=rngs)`` to get fresh weights from each ``init(rng)``, or a built
  module to start from its current weights.

``input_spec`` describes one example ``(x, y)`` without the batch axis: ``jax.ShapeDtypeStruct``
pairs, or any arrays of that shape (e.g. ``dataset.element_spec``). ``loss_fn``, ``metric_fns``,
``loss_reduction`` and ``regularizer`` are the :class:`Model`'s (see
:mod:`fedjax_like.models.model`): per-example values or ``Metric(total, weight)`` pairs.

Both adapters check the model once, on abstract values (:mod:`.checks`): the output keeps the batch
axis, ``loss_fn`` and every metric return one value per example (``[batch]``; a batch mean, as
Keras losses return, is refused with the fix), and a softmax output under the default logits loss
warns (use :class:`~fedjax_like.models.SparseCategoricalCrossentropy` for Keras-style models).

``export_flax_variables(weights)`` turns trained :class:`ModelWeights` back into a Flax variables
dict ``{'params': ..., <other collections>}`` of NumPy arrays (``module.apply(variables, x)``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen, nnx

from fedjax_like.models.checks import as_input_spec, check_model
from fedjax_like.models.model import Model, ModelWeights, accuracy, softmax_cross_entropy

PyTree = Any


def _dummy_batch(x_spec) -> PyTree:
  return jax.tree.map(lambda s: jnp.zeros((1,) + tuple(s.shape), s.dtype), x_spec)


def _accepts(fn: Callable, name: str) -> bool:
  try:
    return name in inspect.signature(fn).parameters
  except (TypeError, ValueError):
    return False


def from_linen(
    module: linen.Module,
    input_spec,
    loss_fn: Callable = softmax_cross_entropy,
    metric_fns: Mapping[str, Callable] | None = None,
    loss_reduction: str = 'sum_over_batch_size',
    regularizer: Callable | None = None,
) -> Model:
  """Wraps a ``flax.linen`` module.

  If the module's ``__call__`` takes a ``train`` argument it is passed (True during client
  training); a ``'dropout'`` RNG is supplied when training with a key.
  """
  spec = as_input_spec(input_spec)
  takes_train = _accepts(module.__call__, 'train')
  try:
    collections = jax.eval_shape(lambda: module.init(jax.random.key(0), _dummy_batch(spec[0])))
  except Exception as e:
    raise ValueError(
        f'from_linen: {type(module).__name__}.init fails on a batch shaped as input_spec x '
        f'({jax.tree.map(lambda s: s.shape, spec[0])}, one example without the batch axis): '
        f'{type(e).__name__}: {e}'
    ) from e
  mutable = sorted(set(collections) - {'params'})
  if mutable:
    raise ValueError(
        f'from_linen: the module keeps mutable collections {mutable} (e.g. BatchNorm\'s '
        'batch_stats), whose updates during local training are not aggregated yet. Use a '
        'normalization without running statistics (GroupNorm or LayerNorm) instead.'
    )

  def init_fn(rng):
    variables = dict(module.init(rng, _dummy_batch(spec[0])))
    return ModelWeights(variables.pop('params', {}), variables)

  def apply_fn(weights: ModelWeights, x, rng=None, train=False):
    variables = {'params': weights.trainable, **weights.non_trainable}
    kwargs = {'train': train} if takes_train else {}
    rngs = {'dropout': rng} if (rng is not None and train) else None
    return module.apply(variables, x, rngs=rngs, **kwargs)

  return _checked('from_linen', init_fn, apply_fn, spec, loss_fn, metric_fns, loss_reduction,
                  regularizer)


def _checked(who, init_fn, apply_fn, spec, loss_fn, metric_fns, loss_reduction='sum_over_batch_size',
             regularizer=None) -> Model:
  """The :class:`Model`, after :func:`~fedjax_like.models.checks.check_model` on one abstract
  batch (output shape, per-example loss and metrics, a softmax output under the logits loss)."""
  metric_fns = dict(metric_fns) if metric_fns is not None else {'accuracy': accuracy}
  check_model(who, init_fn, apply_fn, spec, loss_fn, metric_fns, softmax_cross_entropy)
  return Model(
      init_fn=init_fn, apply_fn=apply_fn, input_spec=spec, loss_fn=loss_fn, metric_fns=metric_fns,
      loss_reduction=loss_reduction, regularizer=regularizer,
  )


def _set_mode(module: nnx.Module, train: bool) -> None:
  """Training or inference behaviour (Dropout, BatchNorm statistics) for this call."""
  module.train() if train else module.eval()


def _reseed(module: nnx.Module, rng) -> None:
  """Gives every RNG stream of the module a key derived from ``rng`` (fresh dropout masks per
  step and client, instead of the stream stored with the weights)."""
  tags = sorted({s.tag for _, s in nnx.iter_graph(module) if isinstance(s, nnx.RngStream)})
  if tags:
    nnx.reseed(module, **{tag: jax.random.fold_in(rng, i) for i, tag in enumerate(tags)})


def from_nnx(
    module: nnx.Module | Callable[[nnx.Rngs], nnx.Module],
    input_spec,
    loss_fn: Callable = softmax_cross_entropy,
    metric_fns: Mapping[str, Callable] | None = None,
    loss_reduction: str = 'sum_over_batch_size',
    regularizer: Callable | None = None,
) -> Model:
  """Wraps a ``flax.nnx`` module (or a factory ``rngs -> module``)."""
  spec = as_input_spec(input_spec)
  factory = None if isinstance(module, nnx.Module) else module
  template = module if factory is None else factory(nnx.Rngs(0))
  graphdef, params_template, rest_template = nnx.split(template, nnx.Param, ...)
  initial = ModelWeights(nnx.to_pure_dict(params_template), nnx.to_pure_dict(rest_template))

  def init_fn(rng):
    if factory is None:
      return initial
    _, p, r = nnx.split(factory(nnx.Rngs(rng)), nnx.Param, ...)
    return ModelWeights(nnx.to_pure_dict(p), nnx.to_pure_dict(r))

  def as_state(template_state, pure):
    state = jax.tree.map(lambda a: a, template_state)  # a fresh copy to fill in
    nnx.replace_by_pure_dict(state, pure)
    return state

  def apply_fn(weights: ModelWeights, x, rng=None, train=False):
    params = as_state(params_template, weights.trainable)
    rest = as_state(rest_template, weights.non_trainable)
    model = nnx.merge(graphdef, params, rest)
    _set_mode(model, train)
    if rng is not None:
      _reseed(model, rng)
    return model(x)

  return _checked('from_nnx', init_fn, apply_fn, spec, loss_fn, metric_fns, loss_reduction,
                  regularizer)


def export_flax_variables(weights) -> dict[str, Any]:
  """Trained weights as a Flax variables dict of NumPy arrays, to use without fedjax_like.

  Args:
    weights: :class:`ModelWeights` (``process.get_model_weights(state)``), or a learning process's
      state (its ``global_model_weights`` are taken).

  Returns:
    ``{'params': trainable, **non_trainable}``. For a linen module (:func:`from_linen`) this is
    what ``module.apply(variables, x)`` takes. For an nnx module (:func:`from_nnx`)
    ``variables['params']`` is the pure dict of its ``nnx.Param`` state: ``_, params, _ =
    nnx.split(module, nnx.Param, ...)``, ``nnx.replace_by_pure_dict(params,
    variables['params'])``, ``nnx.update(module, params)``.
  """
  weights = getattr(weights, 'global_model_weights', weights)
  if not isinstance(weights, ModelWeights):
    raise TypeError(
        'export_flax_variables expects ModelWeights (process.get_model_weights(state)) or a '
        f'learning process state; got {type(weights).__name__}.'
    )
  non_trainable = dict(weights.non_trainable or {})
  if 'params' in non_trainable:
    raise ValueError("export_flax_variables: non_trainable weights hold a 'params' collection.")
  return jax.device_get({'params': weights.trainable, **non_trainable})
