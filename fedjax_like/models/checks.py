"""Build-time checks of a model: input spec, output shape, per-example loss and metrics.

:func:`check_model` runs when a Flax module is wrapped (:func:`~fedjax_like.models.from_linen`,
:func:`~fedjax_like.models.from_nnx`), on abstract values only (``jax.make_jaxpr`` of one batch of
:data:`CHECK_BATCH` examples: nothing is compiled or computed), so a mistake fails there, naming
the function, the shape it returned and the fix, instead of as a wrong number or an error deep in
a compiled round:

- the model's output must keep the batch axis first (``[batch, ...]``);
- ``loss_fn(outputs, labels)`` and every metric must return one value per example, shape
  ``[batch]`` (or a ``Metric(total, weight)`` pair of them): a batch mean (shape ``()``, what every Keras loss returns by default) would be
  summed over examples as if it were one example's value, and ``[batch, 1]`` would broadcast;
- with the default loss (:func:`~fedjax_like.models.softmax_cross_entropy`, which takes logits), a
  model whose output is already a softmax (``exp`` divided by its sum) or a sigmoid gets a
  warning: softmax would be applied twice and training stalls (TFF's quickstart model,
  ``Dense(10, softmax)``, ported as is). The fix is to drop the activation or to pass
  ``loss_fn=fl.models.SparseCategoricalCrossentropy()`` (Keras' loss on probabilities).

:func:`as_input_spec` reads ``input_spec`` (one example, no batch axis) and refuses the TFF
habits that do not fit: a batch axis (``(None, 784)``) and a dict without ``'x'``/``'y'``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

CHECK_BATCH = 7  # an odd size, unlikely to equal another axis, so the batch axis can be told apart
_PASS_THROUGH = ('reshape', 'squeeze', 'expand_dims', 'convert_element_type', 'copy', 'copy_p')


def _name(fn: Callable) -> str:
  return getattr(fn, '__qualname__', None) or getattr(fn, '__name__', None) or repr(fn)


def _shape_dtype(a) -> jax.ShapeDtypeStruct:
  shape = tuple(a.shape)
  if any(d is None for d in shape):
    raise ValueError(
        f'input_spec: shape {shape} has a None axis. input_spec describes ONE example, without '
        'the batch axis (TFF element specs of batched datasets have a leading None): pass '
        f'{tuple(d for d in shape[1:])} instead of {shape}.'
    )
  return jax.ShapeDtypeStruct(shape, jnp.dtype(a.dtype))


def as_input_spec(input_spec) -> tuple[Any, Any]:
  """``input_spec`` as a pair of ``jax.ShapeDtypeStruct`` pytrees ``(x, y)``, one example each."""
  if isinstance(input_spec, Mapping):
    if not {'x', 'y'} <= set(input_spec):
      raise ValueError(
          f'input_spec: a dict must have keys "x" and "y"; got keys {sorted(input_spec)}. Map the '
          'examples to (x, y) pairs first, e.g. .map(lambda e: (e["pixels"].reshape(-1), '
          'e["label"])), and pass that dataset\'s element_spec, or an (x, y) pair of '
          'jax.ShapeDtypeStruct.'
      )
    input_spec = (input_spec['x'], input_spec['y'])
  if not (isinstance(input_spec, (tuple, list)) and len(input_spec) == 2):
    raise TypeError(
        'input_spec must describe one (x, y) example, e.g. '
        '(jax.ShapeDtypeStruct((784,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32)); '
        f'got {input_spec!r}.'
    )
  try:
    return tuple(jax.tree.map(_shape_dtype, part) for part in input_spec)
  except AttributeError as e:
    raise TypeError(
        'input_spec: every leaf must have a shape and a dtype (jax.ShapeDtypeStruct or an '
        f'array); got {input_spec!r}.'
    ) from e


def _shapes(tree) -> Any:
  """A pytree's shapes (one tuple for a single array)."""
  return jax.tree.map(lambda a: tuple(a.shape), tree)


def _is_shape(x) -> bool:
  return isinstance(x, tuple) and all(isinstance(d, int) for d in x)


def _batched(spec) -> Any:
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct((CHECK_BATCH,) + s.shape, s.dtype), spec)


def _producer(jaxpr, var):
  """The equation of ``jaxpr`` that outputs ``var`` (through pass-through ops and nested calls),
  as ``(eqn, jaxpr)``, or ``(None, None)``."""
  for _ in range(64):
    eqn = next((e for e in jaxpr.eqns if any(o is var for o in e.outvars)), None)
    if eqn is None:
      return None, None
    inner = eqn.params.get('jaxpr', eqn.params.get('call_jaxpr'))
    if inner is not None:
      inner = getattr(inner, 'jaxpr', inner)
      var = inner.outvars[[i for i, o in enumerate(eqn.outvars) if o is var][0]]
      jaxpr = inner
    elif eqn.primitive.name in _PASS_THROUGH:
      var = eqn.invars[0]
    else:
      return eqn, jaxpr
  return None, None


def output_activation(jaxpr, out_var) -> str | None:
  """``'softmax'`` when the output is ``exp(z) / sum(exp(z))``, ``'sigmoid'`` for a logistic
  output, else None (read from the traced program, not from values)."""
  eqn, inner = _producer(jaxpr, out_var)
  if eqn is None:
    return None
  if eqn.primitive.name == 'logistic':
    return 'sigmoid'
  if eqn.primitive.name == 'div':
    numerator, _ = _producer(inner, eqn.invars[0])
    if numerator is not None and numerator.primitive.name == 'exp':
      return 'softmax'
  return None


def _per_example(fn: Callable, role: str, outputs, labels) -> None:
  """Checks that ``fn(outputs, labels)`` traces and returns shape ``[batch]``."""
  batch = CHECK_BATCH
  try:
    result = jax.eval_shape(fn, outputs, labels)
  except Exception as e:
    raise ValueError(
        f"{role} {_name(fn)} fails on a batch of the model's outputs (shape {_shapes(outputs)}) "
        f'and labels (shape {labels.shape}), {batch} examples: {type(e).__name__}: {e}. It must '
        'take (outputs[batch, ...], labels[batch]) and return one value per example; the default '
        'loss takes logits [batch, classes] and integer labels [batch].'
        + (
            ' Outputs with more than two axes: flatten before the last layer, or drop a batch '
            'axis from input_spec (it describes one example).'
            if any(len(s) > 2 for s in jax.tree.leaves(_shapes(outputs), is_leaf=_is_shape))
            else ''
        )
    ) from e
  if hasattr(result, 'total') and hasattr(result, 'weight'):  # Metric(total, weight) per example
    parts = [p for p in (result.total, result.weight) if p is not None]
    if all(tuple(p.shape) == (batch,) for p in parts):
      return
    result = next(p for p in parts if tuple(p.shape) != (batch,))
  shape = tuple(getattr(result, 'shape', ()))
  if shape == (batch,):
    return
  if shape == () and 'metric' in role:
    fix = (
        'It returns a batch mean: return the per-example values instead, e.g. '
        '(jnp.argmax(outputs, -1) == labels).astype(jnp.float32) for accuracy.'
    )
  elif shape == ():
    fix = (
        'It returns a batch mean (as Keras losses do by default): return the per-example values '
        "instead (reduction='none'), e.g. fl.models.SparseCategoricalCrossentropy() for "
        "Keras' loss on probabilities."
    )
  elif shape == (batch, 1):
    fix = 'Squeeze the trailing axis: return values[:, 0] (or jnp.squeeze(values, -1)).'
  else:
    fix = 'Reduce every axis but the first (the batch), e.g. jnp.sum(values, axis=-1).'
  raise ValueError(
      f'{role} {_name(fn)} must return one value per example, shape [batch] = ({batch},) for a '
      f'batch of {batch}; it returned shape {shape} for model outputs of shape {_shapes(outputs)}. '
      f'{fix} The library sums per-example values over real examples, so any other shape gives '
      'wrong updates and metrics.'
  )


def check_model(
    who: str,
    init_fn: Callable,
    apply_fn: Callable,
    input_spec: tuple[Any, Any],
    loss_fn: Callable,
    metric_fns: Mapping[str, Callable],
    default_loss: Callable,
) -> None:
  """Traces the model on one abstract batch and checks its output, loss and metrics (above).

  Raises:
    ValueError: naming the function, the shape it returned and the fix.
  """
  x_spec, y_spec = input_spec
  weights = jax.eval_shape(init_fn, jax.random.key(0))
  try:
    closed, out = jax.make_jaxpr(lambda w, x: apply_fn(w, x, None, False), return_shape=True)(
        weights, _batched(x_spec)
    )
  except Exception as e:
    raise ValueError(
        f'{who}: the model cannot be applied to a batch of examples shaped as input_spec x '
        f'({jax.tree.map(lambda s: s.shape, x_spec)}): {type(e).__name__}: {e}'
    ) from e
  shapes = [tuple(leaf.shape) for leaf in jax.tree.leaves(out)]
  if not shapes or any(not shape or shape[0] != CHECK_BATCH for shape in shapes):
    raise ValueError(
        f'{who}: for a batch of {CHECK_BATCH} examples the model returned shapes {shapes}; the '
        'first axis of its output must be the batch. Does input_spec include a batch axis? It '
        'describes one example (e.g. (784,), not (20, 784)).'
    )
  labels = jax.ShapeDtypeStruct((CHECK_BATCH,) + tuple(y_spec.shape), y_spec.dtype)
  _per_example(loss_fn, f'{who}: loss_fn', out, labels)
  for name, fn in metric_fns.items():
    _per_example(fn, f'{who}: metric {name!r}', out, labels)
  single = len(closed.jaxpr.outvars) == 1
  activation = output_activation(closed.jaxpr, closed.jaxpr.outvars[0]) if single else None
  if loss_fn is default_loss and activation is not None:
    warnings.warn(
        f'{who}: the model\'s output is a {activation} (probabilities), but the default loss '
        "softmax_cross_entropy takes logits and applies softmax itself: it would be applied "
        "twice and training stalls. Drop the output activation (Dense(10) instead of Dense(10, "
        'softmax)), or pass loss_fn=fl.models.SparseCategoricalCrossentropy() (Keras\' loss '
        'on probabilities, as in TFF\'s quickstart).',
        UserWarning,
        stacklevel=3,
    )
