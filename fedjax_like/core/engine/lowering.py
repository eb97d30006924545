"""Lowering of a client loop's step (forward pass and gradients) for the backend.

XLA:CPU runs a convolution inside a compiled loop (``lax.scan``/``while``) about 25-40x slower than
the same convolution outside one (measured on this project's 2-core machines: 13-19 vs 450-600
examples/s for the EMNIST CNN at batch 20; see benchmarks/RESULTS.md). A federated round is a loop
over local steps, so on CPU the engine rewrites every convolution of the lowered step, in one of
two ways:

- **native** (:func:`native_convolutions`, the CPU default): 2-D float32 convolutions with stride 1,
  no dilation and output channels in multiples of 16 call the direct-convolution kernels of
  :mod:`.native` (built on first use, called through XLA's FFI, fast inside loops). Others fall
  back to im2col.
- **im2col** (:func:`im2col_convolutions`): the kernel's shifted windows are sliced out of the
  (padded) input, concatenated on the feature axis and contracted with the reshaped kernel in one
  dot. Slices, concatenation and dots stay fast inside loops, and the gradient is whatever JAX
  derives for them.

Both are exact up to float reassociation, and tested against a NumPy convolution loop.

Dense products get the same treatment where it wins (``dense_lowering``, native on CPU): the
step's ``dot_general`` equations, forward products and the gradients JAX derived for them alike,
go to :func:`.dense.dot_general`, which runs the small ones of a local step (a batch against a
layer's weights) on register-tiled kernels and leaves the rest to XLA. A weight gradient whose one
use is a transpose (JAX writes ``dL/dW`` of ``x @ W`` as ``transpose(gᵀ x)``) is handed over
already transposed, so the two transposes cancel instead of costing a strided copy per step.

Pooling gets the same treatment. XLA differentiates ``reduce_window_max`` (``nn.max_pool``) with
``select_and_scatter``, which ran 3.5 ms per EMNIST-CNN step at batch 20 on XLA:CPU against 0.9 ms
for the same pooling written as a reshape and a max (benchmarks/RESULTS.md). So non-overlapping
pools (stride = window, no padding, no dilation, the common ``max_pool(x, (2, 2), (2, 2))``) become
a reshape into blocks and a reduction, with a JVP that sends each window's tangent to its *first*
maximum in row-major order, the element ``select_and_scatter`` picks, so gradients match XLA's even
on ties. ``reduce_window_sum`` (``avg_pool``) becomes a reshape and a sum.

The rewrites work on the jaxpr of any function (Flax linen, nnx or plain JAX), recursing into nested
``jit`` calls. Forms they do not cover (grouped convolutions, input dilation, negative padding,
overlapping or padded pools, products with batch dimensions or long contractions) are left to XLA
untouched.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
from jax import lax

from fedjax_like.core.engine import dense, native

PyTree = Any
# jax < 0.7 (the newest jax on Python 3.10 is 0.6.2) has these in jax.core only, not jax.extend.core.
_DropVar = getattr(jex, 'DropVar', None) or jax.core.DropVar
_jaxprs_in_params = getattr(jex, 'jaxprs_in_params', None) or jax.core.jaxprs_in_params
_NESTED_CALLS = ('pjit', 'jit', 'closed_call', 'core_call')
_POOLS = ('reduce_window_max', 'reduce_window_sum')


def _channels_last(lhs, rhs, dimension_numbers):
  """The operands as ``[N, *spatial, C]`` and ``[*window, C, O]``."""
  lhs_spec, rhs_spec, _ = dimension_numbers
  x = jnp.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))
  k = jnp.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))
  return x, k


def _pad_spatial(x, padding):
  """``x`` ``[N, *spatial, C]`` zero-padded by ``padding`` (``(lo, hi)`` per spatial axis)."""
  pads = [(0, 0, 0), *((lo, hi, 0) for lo, hi in padding), (0, 0, 0)]
  return lax.pad(x, jnp.zeros((), x.dtype), pads)


def _from_channels_last(out, dimension_numbers):
  """``out`` ``[N, *spatial, O]`` in the convolution's output layout."""
  out_spec = dimension_numbers[2]
  perm = [0] * out.ndim
  perm[out_spec[0]] = 0
  perm[out_spec[1]] = out.ndim - 1
  for d in range(out.ndim - 2):
    perm[out_spec[2 + d]] = 1 + d
  return jnp.transpose(out, perm)


def _kernel_larger_than_output(lhs, rhs, dimension_numbers, window_strides, rhs_dilation,
                               padding) -> bool:
  """A convolution whose window is larger than its output: the kernel gradient of a forward
  convolution (``x`` against ``dy``), stride and dilation 1."""
  if any(s != 1 for s in window_strides) or any(d != 1 for d in rhs_dilation):
    return False
  lhs_spec, rhs_spec, _ = dimension_numbers
  window = [rhs.shape[d] for d in rhs_spec[2:]]
  spatial = [lhs.shape[d] + lo + hi for d, (lo, hi) in zip(lhs_spec[2:], padding)]
  out = [n - w + 1 for n, w in zip(spatial, window)]
  return int(np.prod(window)) > int(np.prod(out))


def _conv_by_output_position(x, k, padding, precision, preferred_element_type):
  """``[N, *spatial, C] * [*window, C, O] -> [N, *out, O]`` as one dot per OUTPUT position (the
  window sliced from the padded input): for a window larger than its output (a kernel
  gradient) this is the short loop."""
  nd = x.ndim - 2
  x = _pad_spatial(x, padding)
  window = k.shape[:nd]
  outs = [n - w + 1 for n, w in zip(x.shape[1:1 + nd], window)]
  flat_k = k.reshape(-1, k.shape[-1])
  cols = []
  for offset in itertools.product(*(range(o) for o in outs)):
    patch = x[(slice(None), *(slice(o, o + w) for o, w in zip(offset, window)), slice(None))]
    cols.append(lax.dot_general(
        patch.reshape(patch.shape[0], -1), flat_k, (((1,), (0,)), ((), ())),
        precision=precision, preferred_element_type=preferred_element_type,
    ))
  return jnp.stack(cols, axis=1).reshape((x.shape[0], *outs, k.shape[-1]))


def _conv_im2col(lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation,
                 dimension_numbers, precision=None, preferred_element_type=None, **_):
  """``conv_general_dilated`` (no groups, no input dilation) as slices + concatenate + one dot."""
  nd = lhs.ndim - 2
  x, k = _channels_last(lhs, rhs, dimension_numbers)
  if _kernel_larger_than_output(lhs, rhs, dimension_numbers, window_strides, rhs_dilation,
                                padding):
    out = _conv_by_output_position(x, k, padding, precision, preferred_element_type)
    return _from_channels_last(out, dimension_numbers)
  x = _pad_spatial(x, padding)
  window = k.shape[:nd]
  out_sizes = [
      (x.shape[1 + d] - (window[d] - 1) * rhs_dilation[d] - 1) // window_strides[d] + 1
      for d in range(nd)
  ]
  patches = []
  for offset in itertools.product(*(range(w) for w in window)):
    start = [0] + [offset[d] * rhs_dilation[d] for d in range(nd)] + [0]
    limit = (
        [x.shape[0]]
        + [start[1 + d] + (out_sizes[d] - 1) * window_strides[d] + 1 for d in range(nd)]
        + [x.shape[-1]]
    )
    patches.append(lax.slice(x, start, limit, [1, *window_strides, 1]))
  cols = patches[0] if len(patches) == 1 else jnp.concatenate(patches, axis=-1)
  out = lax.dot_general(
      cols,
      k.reshape(-1, k.shape[-1]),
      (((cols.ndim - 1,), (0,)), ((), ())),
      precision=precision,
      preferred_element_type=preferred_element_type,
  )  # [N, *out_spatial, O]
  return _from_channels_last(out, dimension_numbers)


def _conv_native(lhs, rhs, **params):
  """``conv_general_dilated`` through :func:`native.conv2d` where it applies, else im2col."""
  preferred = params.get('preferred_element_type')
  if not (
      lhs.ndim == 4
      and all(s == 1 for s in params['window_strides'])
      and all(d == 1 for d in params['rhs_dilation'])
      and (preferred is None or preferred == jnp.float32)
  ):
    return _conv_im2col(lhs, rhs, **params)
  x, k = _channels_last(lhs, rhs, params['dimension_numbers'])  # [N, H, W, C], [KH, KW, C, O]
  padding = tuple(tuple(int(p) for p in side) for side in params['padding'])
  if _kernel_larger_than_output(lhs, rhs, params['dimension_numbers'], params['window_strides'],
                                params['rhs_dilation'], padding):
    return _kernel_gradient_native(x, k, padding, params)
  if not native.supports(x, k, padding):  # e.g. padding as wide as the kernel: pad explicitly
    x, padding = _pad_spatial(x, padding), ((0, 0), (0, 0))
  if not (native.supports(x, k, padding) and native.available()):
    return _conv_im2col(lhs, rhs, **params)
  return _from_channels_last(native.conv2d(x, k, padding), params['dimension_numbers'])


def _kernel_gradient_native(x, k, padding, params):
  """The big-window form ``out[n, p, o] = sum_{w, c} x[n, p + w, c] k[w, c, o]`` on the native
  kernel-gradient kernel: with ``x`` read as ``[c, H, W, n]`` and ``k`` as ``dy [c, *w, o]`` it
  computes ``[*p, n, o]``."""
  (pt, pb), (pl, pr) = padding
  xt = jnp.transpose(x, (3, 1, 2, 0))  # [C, H, W, N]: the images are the contracted axis
  dy = jnp.transpose(k, (2, 0, 1, 3))  # [C, KH, KW, O]
  oh = x.shape[1] + pt + pb - k.shape[0] + 1
  ow = x.shape[2] + pl + pr - k.shape[1] + 1
  fits = (
      x.dtype == jnp.float32 and k.dtype == jnp.float32 and k.shape[3] % native.LANES == 0
      and 0 <= pt < oh and 0 <= pb < oh and 0 <= pl < ow and 0 <= pr < ow
  )
  if not (fits and native.available()):
    out = _conv_by_output_position(
        x, k, padding, params.get('precision'), params.get('preferred_element_type')
    )
  else:
    out = jnp.transpose(native._dw_call(xt, dy, oh, ow, pt, pl), (2, 0, 1, 3))
  return _from_channels_last(out, params['dimension_numbers'])


def _blocks(x, window):
  """``x`` cropped to whole windows and reshaped to ``[o0, w0, o1, w1, ...]``; also ``o``."""
  outs = [n // w for n, w in zip(x.shape, window)]
  x = x[tuple(slice(0, o * w) for o, w in zip(outs, window))]
  return x.reshape([d for o, w in zip(outs, window) for d in (o, w)]), outs


def _window_axes(rank: int) -> tuple[int, ...]:
  return tuple(range(1, 2 * rank, 2))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _max_pool_blocks(x, window):
  blocked, _ = _blocks(x, window)
  return jnp.max(blocked, axis=_window_axes(x.ndim))


def _first_max_mask(x, window):
  """Bool ``[o0, w0, o1, w1, ...]``: True at each window's first maximum (row-major order)."""
  blocked, outs = _blocks(x, window)
  top = jnp.max(blocked, axis=_window_axes(x.ndim))
  taken = jnp.zeros(outs, bool)
  masks = []
  for offset in itertools.product(*(range(w) for w in window)):
    hit = (blocked[tuple(i for off in offset for i in (slice(None), off))] == top) & ~taken
    taken = taken | hit
    masks.append(hit)
  stacked = jnp.stack(masks).reshape(tuple(window) + tuple(outs))  # [w0, w1, ..., o0, o1, ...]
  rank = x.ndim
  return jnp.transpose(stacked, [p for d in range(rank) for p in (rank + d, d)])


@_max_pool_blocks.defjvp
def _max_pool_blocks_jvp(window, primals, tangents):
  (x,), (t,) = primals, tangents
  blocked_t, _ = _blocks(t, window)
  picked = jnp.where(_first_max_mask(x, window), blocked_t, jnp.zeros_like(blocked_t))
  return _max_pool_blocks(x, window), jnp.sum(picked, axis=_window_axes(x.ndim))


def _pool_rewritable(x, params) -> bool:
  window = params['window_dimensions']
  return (
      jnp.issubdtype(x.dtype, jnp.floating)
      and tuple(params['window_strides']) == tuple(window)
      and all(lo == 0 and hi == 0 for lo, hi in params['padding'])
      and all(d == 1 for d in params['base_dilation'])
      and all(d == 1 for d in params['window_dilation'])
      and all(n >= w for n, w in zip(x.shape, window))
  )


def _pool(name, x, params):
  window = tuple(params['window_dimensions'])
  if name == 'reduce_window_max':
    return _max_pool_blocks(x, window)
  blocked, _ = _blocks(x, window)
  return jnp.sum(blocked, axis=_window_axes(x.ndim))


def _scatter_to_first_max(source, operand, params):
  """``select_and_scatter_add`` (the gradient of a max pool) for non-overlapping windows: each
  window's cotangent goes to its first maximum in row-major order, as XLA's rule picks."""
  window = tuple(params['window_dimensions'])
  blocked_mask = _first_max_mask(operand, window)
  _, outs = _blocks(operand, window)
  expanded = source.reshape([d for o in outs for d in (o, 1)])
  picked = jnp.where(blocked_mask, expanded, jnp.zeros((), source.dtype))
  dense = picked.reshape([o * w for o, w in zip(outs, window)])
  pads = [(0, n - o * w, 0) for n, o, w in zip(operand.shape, outs, window)]
  return lax.pad(dense, jnp.zeros((), source.dtype), pads)


def _scatter_rewritable(source, operand, params) -> bool:
  return (
      params['select_prim'] is lax.ge_p
      and _pool_rewritable(operand, params | {'base_dilation': (1,) * operand.ndim,
                                              'window_dilation': (1,) * operand.ndim})
  )


def _rewritable(params) -> bool:
  return (
      params['feature_group_count'] == 1
      and params['batch_group_count'] == 1
      and all(d == 1 for d in params['lhs_dilation'])
      and all(lo >= 0 and hi >= 0 for lo, hi in params['padding'])
  )


def _only_transposed(jaxpr) -> set:
  """The variables of ``jaxpr`` whose one use is a ``transpose`` (a weight gradient that JAX
  computes as ``(gᵀ x)ᵀ``): a product may hand those over transposed, and XLA cancels the pair."""
  uses: dict = {}
  for eqn in jaxpr.eqns:
    for v in eqn.invars:
      if not isinstance(v, jex.Literal):
        uses.setdefault(v, []).append(eqn.primitive.name)
  for v in jaxpr.outvars:
    if not isinstance(v, jex.Literal):
      uses.setdefault(v, []).append(None)
  return {v for v, names in uses.items() if names == ['transpose']}


def _eval_jaxpr(jaxpr, consts, *args, conv=_conv_im2col, dot=None):
  env = {}

  def read(v):
    return v.val if isinstance(v, jex.Literal) else env[v]

  for var, val in zip(jaxpr.constvars, consts):
    env[var] = val
  for var, val in zip(jaxpr.invars, args):
    env[var] = val
  transposed = _only_transposed(jaxpr) if dot is not None else set()
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    product = None
    if dot is not None and name == 'dot_general':
      product = dot(*invals, **eqn.params, transposed=eqn.outvars[0] in transposed)
    if product is not None:
      outvals = [product]
    elif conv is not None and name == 'conv_general_dilated' and _rewritable(eqn.params):
      outvals = [conv(*invals, **eqn.params)]
    elif conv is not None and name in _POOLS and _pool_rewritable(invals[0], eqn.params):
      outvals = [_pool(name, invals[0], eqn.params)]
    elif conv is not None and name == 'select_and_scatter_add' and _scatter_rewritable(
        *invals, eqn.params
    ):
      outvals = [_scatter_to_first_max(*invals, eqn.params)]
    elif name in _NESTED_CALLS and 'jaxpr' in eqn.params:
      inner = eqn.params['jaxpr']
      outvals = _eval_jaxpr(inner.jaxpr, inner.consts, *invals, conv=conv, dot=dot)
    else:
      bound = eqn.primitive.get_bind_params(eqn.params)
      subfuns, bind_params = bound if isinstance(bound, tuple) else ((), bound)  # jax < 0.7: a pair
      with eqn.ctx.manager:
        outvals = eqn.primitive.bind(*subfuns, *invals, **bind_params)
      if not eqn.primitive.multiple_results:
        outvals = [outvals]
    for var, val in zip(eqn.outvars, outvals):
      if not isinstance(var, _DropVar):
        env[var] = val
  return [read(v) for v in jaxpr.outvars]


def has_convolution(fn: Callable, *args) -> bool:
  """Whether ``fn(*args)`` traces to any convolution (nested calls included)."""

  def scan(jaxpr) -> bool:
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'conv_general_dilated':
        return True
      if any(scan(getattr(sub, 'jaxpr', sub)) for sub in _jaxprs_in_params(eqn.params)):
        return True
    return False

  return scan(jax.make_jaxpr(fn)(*args).jaxpr)


def _rewrite(fn: Callable, conv, dot=None) -> Callable:
  def wrapped(*args):
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    out = _eval_jaxpr(closed.jaxpr, closed.consts, *jax.tree.leaves(args), conv=conv, dot=dot)
    return jax.tree.unflatten(jax.tree.structure(out_shape), out)

  return wrapped


def im2col_convolutions(fn: Callable) -> Callable:
  """``fn`` with every supported convolution computed as im2col (same values, loop-friendly)."""
  return _rewrite(fn, _conv_im2col)


def native_convolutions(fn: Callable) -> Callable:
  """``fn`` with convolutions on the native CPU kernels where they apply, im2col elsewhere."""
  return _rewrite(fn, _conv_native)


def native_dense(fn: Callable) -> Callable:
  """``fn`` with its dense products (``dot_general``) on the native CPU kernels where they apply
  (:mod:`.dense`), convolutions and pools left as they are."""
  return _rewrite(fn, None, dense.dot_general)


def lower(fn: Callable | None, mode: str, dense_mode: str = 'xla') -> Callable | None:
  """``fn`` (a client loop's ``step``, or any function of arrays) lowered for ``mode``:
  ``'native'``, ``'im2col'`` or ``'xla'`` (unchanged) for convolutions and pools, and
  ``dense_mode``: ``'native'`` or ``'xla'`` for dense products. The rewrite works on the traced,
  differentiated function: forward convolutions, their input gradients (convolutions with the
  flipped kernel) and kernel gradients (windows larger than the output), max-pool gradients
  (``select_and_scatter_add``) and pools; dense products and their gradients alike."""
  if fn is None or (mode == 'xla' and dense_mode == 'xla'):
    return fn
  conv = {'native': _conv_native, 'im2col': _conv_im2col, 'xla': None}[mode]
  dot = dense.dot_general if dense_mode == 'native' else None
  return _rewrite(fn, conv, dot)
