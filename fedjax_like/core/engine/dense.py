"""Dense products of a local step on the native CPU kernels: ``dot_general`` lowered to ``_dense.c``.

A local step of a small model is a few small matrix products (a batch of 16-64 examples against a
layer's weights, and their gradients), and inside a compiled loop XLA:CPU runs them well below
what the vector units allow (benchmarks/RESULTS.md). The engine's lowering (:mod:`.lowering`)
hands each ``dot_general`` of a step to :func:`dot_general`, which computes it with one of two
register-tiled kernels of :mod:`.native` (``_dense.c``) where they are faster, and returns None
(XLA's dot stays) elsewhere:

=========================================  =================================================
``matmul(a [.., M, K], b [.., K, N])``     ``a @ b``: forward products, input gradients
``matmul_tn(a [.., M, K], b [.., M, N])``  ``aᵀ @ b``: weight gradients (``[K, N]``)
=========================================  =================================================

Leading dimensions are a batch (vmapped clients; a size-1 one broadcasts). A ``dot_general`` is
taken when its operands and result are float32, it has no batch dimensions, its result has at
least 16 columns (one vector), and its contraction fits the kernels' sweet spot:

- contracting the trailing axes of the left operand with the leading axes of the right (``x @ W``)
  or the trailing axes of both (``g @ Wᵀ``, the right operand then transposed by XLA, if it has at
  most :data:`MAX_TRANSPOSED` elements) over at most :data:`MAX_NN_CONTRACTION` elements;
- contracting the leading axes of both (``xᵀ @ g``, a weight gradient over the batch) over at most
  :data:`MAX_TN_CONTRACTION` elements, into at most :data:`MAX_TN_OUTPUT` result elements.

Contractions longer than these ran slower than XLA's dots (no cache blocking); the limits come
from the measurements in benchmarks/RESULTS.md. Results match XLA's up to float reassociation
(each output element is one fused multiply-add chain in contraction order, the same whichever
thread computes it). Both functions are differentiable in reverse mode (``jax.custom_vjp``, the
gradients by XLA's own products); the engine lowers a step after differentiating it, so this only
matters to code that differentiates a lowered function.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from fedjax_like.core.engine import native

MIN_COLUMNS = 16  # one vector of float32: the kernels' narrowest result
MAX_NN_CONTRACTION = 1024  # x @ W: K up to this (EMNIST's 784 inputs; not a CNN's 9216)
MAX_TN_CONTRACTION = 32  # xᵀ @ g: the batch summed over, up to this
MAX_TN_OUTPUT = 1 << 16  # xᵀ @ g: result elements (K * N), up to this
MAX_TRANSPOSED = 1 << 16  # g @ Wᵀ: elements of W (transposed by XLA first), up to this


def _batch_shape(a, b) -> tuple:
  return jnp.broadcast_shapes(a.shape[:-2], b.shape[:-2])


def _broadcast(x, batch: tuple):
  """``x`` with the leading dimensions ``batch`` (size-1 ones kept: the kernels broadcast)."""
  missing = len(batch) - (x.ndim - 2)
  return x.reshape((1,) * missing + x.shape) if missing else x


def _unbroadcast(grad, shape):
  """``grad`` summed back to an operand's ``shape`` (over the batch axes it was broadcast on)."""
  extra = grad.ndim - len(shape)
  grad = grad.sum(axis=tuple(range(extra))) if extra else grad
  axes = tuple(d for d, n in enumerate(shape[:-2]) if n == 1 and grad.shape[d] != 1)
  return grad.sum(axis=axes, keepdims=True) if axes else grad


def _t(x):
  return jnp.swapaxes(x, -1, -2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _product(transpose_a: bool, a, b):
  """``a @ b`` (``aᵀ @ b`` with ``transpose_a``) on the native kernel, batched over the leading
  dimensions."""
  batch = _batch_shape(a, b)
  rows = a.shape[-1] if transpose_a else a.shape[-2]
  out = jax.ShapeDtypeStruct((*batch, rows, b.shape[-1]), jnp.float32)
  target = 'fjl_dense_tn' if transpose_a else 'fjl_dense_nn'
  call = jax.ffi.ffi_call(target, out, vmap_method='expand_dims')
  return call(_broadcast(a, batch), _broadcast(b, batch))


def _product_fwd(transpose_a, a, b):
  return _product(transpose_a, a, b), (a, b)


def _product_bwd(transpose_a, residuals, g):
  a, b = residuals  # the gradients by XLA's own products
  da = jnp.matmul(b, _t(g)) if transpose_a else jnp.matmul(g, _t(b))
  db = jnp.matmul(a, g) if transpose_a else jnp.matmul(_t(a), g)
  return _unbroadcast(da, a.shape), _unbroadcast(db, b.shape)


_product.defvjp(_product_fwd, _product_bwd)


def matmul(a, b):
  """``a [.., M, K] @ b [.., K, N]`` (float32, N >= 16) on the native kernel."""
  return _product(False, a, b)


def matmul_tn(a, b):
  """``a [.., M, K]ᵀ @ b [.., M, N]`` -> ``[.., K, N]`` (float32, N >= 16) on the native kernel."""
  return _product(True, a, b)


def _span(axes: tuple, start: int) -> bool:
  """Whether ``axes`` are ``start, start + 1, ...`` in order."""
  return axes == tuple(range(start, start + len(axes)))


def dot_general(lhs, rhs, *, dimension_numbers, preferred_element_type=None, transposed=False,
                **_):
  """``lax.dot_general(lhs, rhs, dimension_numbers)`` on the native kernels, or None where they
  do not apply (see the module docstring); ``precision`` is ignored (float32 throughout).

  ``transposed``: the result's one use transposes it. A product contracted over leading axes is
  then computed as ``(rhsᵀ lhs)ᵀ``, so the use's transpose and this one cancel in XLA (JAX
  writes the gradient of ``x @ W`` by ``W`` as ``transpose(gᵀ x)``)."""
  (lc, rc), (lb, rb) = dimension_numbers
  lc, rc = tuple(int(d) for d in lc), tuple(int(d) for d in rc)
  if (
      lb or rb or not lc
      or lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32
      or (preferred_element_type is not None and preferred_element_type != jnp.float32)
  ):
    return None
  l_free = [n for d, n in enumerate(lhs.shape) if d not in lc]
  r_free = [n for d, n in enumerate(rhs.shape) if d not in rc]
  m, n = math.prod(l_free), math.prod(r_free)
  k = math.prod(lhs.shape[d] for d in lc)
  out_shape = (*l_free, *r_free)
  if n < MIN_COLUMNS or m == 0 or k == 0:
    return None
  l_lead, l_trail = _span(lc, 0), _span(lc, lhs.ndim - len(lc))
  r_lead, r_trail = _span(rc, 0), _span(rc, rhs.ndim - len(rc))
  nn = l_trail and (r_lead or (r_trail and k * n <= MAX_TRANSPOSED)) and k <= MAX_NN_CONTRACTION
  tn = l_lead and r_lead and k <= MAX_TN_CONTRACTION and m * n <= MAX_TN_OUTPUT
  if not (nn or tn) or not native.available():
    return None
  if nn:
    b = rhs.reshape(k, n) if r_lead else rhs.reshape(n, k).T
    out = matmul(lhs.reshape(m, k), b)
  elif transposed and len(l_free) == 1 and len(r_free) == 1 and m >= MIN_COLUMNS:
    out = matmul_tn(rhs.reshape(k, n), lhs.reshape(k, m)).T
  else:
    out = matmul_tn(lhs.reshape(k, m), rhs.reshape(k, n))
  return out.reshape(out_shape)
