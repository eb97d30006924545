"""Native CPU kernels: direct 2-D convolutions and dense products, built on first use and called
through XLA's FFI.

XLA:CPU has no convolution that is fast inside a compiled loop (see :mod:`.lowering`), and its
im2col form spends as long writing the patch matrix and reading it back as multiplying. PyTorch's
CPU convolutions (oneDNN) were 1.3x faster than that on the EMNIST CNN. ``_conv2d.c`` is a direct
convolution instead: register-tiled outer products that read the input in place (zero padding is
implicit: taps on it are skipped), for the forward pass and the kernel gradient (the input
gradient is the forward kernel on the output gradient with the flipped kernel), split over XLA's
intra-op thread pool. On this project's 2-core machines it runs the EMNIST CNN's second
convolution at about 300 GFLOP/s forward and backward, against about 220 for im2col
(benchmarks/RESULTS.md).

``_dense.c`` holds the dense-product kernels that :mod:`.dense` wraps, and ``_native.h`` the
plumbing both share (vectors, work sharing on XLA's intra-op thread pool, the FFI call frame).

The sources ship with the package and are compiled into one library with the system C compiler
(``$CC``, else ``cc``/``gcc``/``clang``) the first time a process needs it, with ``-O3
-march=native`` so it uses the vector units of the machine it runs on (AVX-512, AVX2, NEON). The library is cached under
``$FEDJAX_LIKE_CACHE_DIR`` (default ``~/.cache/fedjax_like``, else a private directory under the
system's temporary one), keyed on the sources, the compiler, the FFI headers and what
``-march=native`` resolves to, so later processes only load it; a cached file is loaded only if it
belongs to the user and no one else can write it. Where no compiler works,
:func:`available` is False, a warning says why once, and the engine uses im2col (same values).
``FEDJAX_LIKE_NATIVE=0`` turns the kernels off.

:func:`conv2d` is differentiable in reverse mode (``jax.custom_vjp``), batches under ``vmap`` (the
kernels take leading batch dimensions: each client of a cohort has its own weights, and one call
runs them all) and runs under ``shard_map`` on every device. Forward-mode differentiation
(``jax.jvp``) of a model lowered this way is not supported: use
``cohort.execution(conv_lowering='im2col')`` for it. Taps on the zero padding are skipped, not
multiplied, so an infinite weight next to the border gives inf where XLA's convolution gives NaN
(0 * inf); a model with an infinite weight has diverged either way.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_HERE = Path(__file__).parent
_SOURCES = (_HERE / '_conv2d.c', _HERE / '_dense.c')  # compiled together into one library
_HEADER = _HERE / '_native.h'  # their shared plumbing (vectors, thread pool, FFI frame)
# Freestanding: the compiler's own headers only (no libc development files needed, see the source).
_FLAGS = ('-O3', '-march=native', '-std=gnu11', '-shared', '-fPIC', '-ffreestanding', '-nostdlib')
_TARGETS = {
    'fjl_conv2d_fwd': 'FjlConv2dFwd',
    'fjl_conv2d_dw': 'FjlConv2dDw',
    'fjl_dense_nn': 'FjlDenseNN',
    'fjl_dense_tn': 'FjlDenseTN',
}
LANES = 16  # output channels must be a multiple of this (one 64-byte vector of float32)
_COMPILE_TIMEOUT_S = 300

_lock = threading.Lock()
_status: dict[str, object] = {}


def _compiler() -> str | None:
  for name in (os.environ.get('CC'), 'cc', 'gcc', 'clang'):
    if name and shutil.which(name):
      return shutil.which(name)
  return None


def _run(cmd) -> subprocess.CompletedProcess:
  try:
    return subprocess.run(
        cmd, capture_output=True, text=True, check=False, timeout=_COMPILE_TIMEOUT_S
    )
  except (OSError, subprocess.TimeoutExpired) as e:
    raise RuntimeError(f'{" ".join(map(str, cmd))} did not run: {e}') from e


def _target_signature(cc: str) -> str:
  """What ``-march=native`` resolves to on this machine: the compiler's predefined macros (they
  name the instruction sets it will use, on x86 and ARM alike)."""
  done = _run([cc, '-march=native', '-dM', '-E', '-x', 'c', os.devnull])
  return done.stdout if done.returncode == 0 else platform.processor() or platform.machine()


def _owned(path: Path) -> bool:
  """Whether ``path`` belongs to this user and no one else may write it (a cache one may trust)."""
  info = path.stat()
  return info.st_uid == os.getuid() and not info.st_mode & 0o022


def _cache_dir() -> Path:
  """``$FEDJAX_LIKE_CACHE_DIR``, else ``~/.cache/fedjax_like``, else a private temporary one."""
  root = os.environ.get('FEDJAX_LIKE_CACHE_DIR')
  for path in (Path(root) if root else Path.home() / '.cache' / 'fedjax_like',
               Path(tempfile.gettempdir()) / f'fedjax_like-{os.getuid()}'):
    try:
      path.mkdir(parents=True, exist_ok=True, mode=0o700)
      if _owned(path) and os.access(path, os.W_OK):
        return path
    except OSError:
      pass
  return Path(tempfile.mkdtemp(prefix='fedjax_like-'))  # nothing shared: build afresh


def _build() -> Path:
  """The compiled library's path, compiling it unless a matching one is cached."""
  cc = _compiler()
  if cc is None:
    raise RuntimeError('no C compiler found (set $CC, or install gcc or clang)')
  include = Path(jax.ffi.include_dir())
  key = hashlib.sha256()
  for part in (
      *(path.read_bytes() for path in (*_SOURCES, _HEADER)),
      (include / 'xla' / 'ffi' / 'api' / 'c_api.h').read_bytes(),
      ' '.join(_FLAGS).encode(),
      cc.encode(),
      _run([cc, '--version']).stdout.encode(),
      platform.machine().encode(),
      _target_signature(cc).encode(),
  ):
    key.update(hashlib.sha256(part).digest())
  cache = _cache_dir()
  target = cache / f'fjl_native-{key.hexdigest()[:20]}.so'
  if target.exists() and _owned(target):
    return target
  fd, scratch = tempfile.mkstemp(dir=cache, prefix=target.name, suffix='.tmp')
  os.close(fd)
  cmd = [cc, *_FLAGS, f'-I{include}', f'-I{_HERE}', *map(str, _SOURCES), '-o', scratch]
  done = _run(cmd)
  if done.returncode != 0:
    Path(scratch).unlink(missing_ok=True)
    raise RuntimeError(f'{" ".join(cmd)} failed:\n{done.stderr.strip()[-2000:]}')
  os.chmod(scratch, 0o755)
  os.replace(scratch, target)  # atomic: concurrent builders each install a complete file
  return target


def available() -> bool:
  """Whether the native kernels are built and registered in this process (building them if not)."""
  with _lock:
    if 'ok' not in _status:
      _status['ok'], _status['why'] = _load()
      if not _status['ok'] and _status['why'] != 'disabled':
        warnings.warn(
            'fedjax_like: native CPU kernels unavailable, using the im2col lowering for '
            "convolutions and XLA's dots for dense products "
            f'(same results, slower): {_status["why"]}. Set FEDJAX_LIKE_NATIVE=0 to skip them.',
            RuntimeWarning,
            stacklevel=3,
        )
    return bool(_status['ok'])


def unavailable_reason() -> str | None:
  """Why :func:`available` is False (None when it is True or has not been asked yet)."""
  return None if _status.get('ok', True) else str(_status.get('why'))


def _load() -> tuple[bool, str]:
  if os.environ.get('FEDJAX_LIKE_NATIVE', '1').strip().lower() in ('0', 'false', 'off', 'no'):
    return False, 'disabled'
  try:
    lib = ctypes.CDLL(str(_build()))
    for target, symbol in _TARGETS.items():
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform='cpu')
  except Exception as e:  # a missing compiler, a failed build, an old jaxlib without jax.ffi
    return False, str(e).strip() or type(e).__name__
  _status['lib'] = lib  # keep the library loaded for the life of the process
  return True, ''


def supports(x, w, padding=((0, 0), (0, 0))) -> bool:
  """Whether :func:`conv2d` takes these operands (NHWC input, HWIO kernel) and padding."""
  (pt, pb), (pl, pr) = padding
  return (
      x.ndim == 4
      and w.ndim == 4
      and x.dtype == jnp.float32
      and w.dtype == jnp.float32
      and x.shape[3] == w.shape[2]
      and w.shape[3] % LANES == 0
      and all(0 <= p < w.shape[0] for p in (pt, pb))
      and all(0 <= p < w.shape[1] for p in (pl, pr))
      and x.shape[1] + pt + pb >= w.shape[0]
      and x.shape[2] + pl + pr >= w.shape[1]
  )


def _require():
  if not available():
    raise RuntimeError(
        f'fedjax_like native convolutions are unavailable: {unavailable_reason()}. Use '
        "cohort.execution(conv_lowering='im2col') or 'xla' instead."
    )


def _fwd_call(x, w, out_hw, pad_top, pad_left):
  _require()
  out = jax.ShapeDtypeStruct((x.shape[0], *out_hw, w.shape[3]), x.dtype)
  call = jax.ffi.ffi_call('fjl_conv2d_fwd', out, vmap_method='broadcast_all')
  return call(x, w, pad_top=np.int64(pad_top), pad_left=np.int64(pad_left))


def _dw_call(x, dy, kh, kw, pad_top, pad_left):
  _require()
  out = jax.ShapeDtypeStruct((kh, kw, x.shape[3], dy.shape[3]), x.dtype)
  call = jax.ffi.ffi_call('fjl_conv2d_dw', out, vmap_method='broadcast_all')
  return call(x, dy, pad_top=np.int64(pad_top), pad_left=np.int64(pad_left))


def _out_hw(x, w, padding):
  (pt, pb), (pl, pr) = padding
  return (x.shape[1] + pt + pb - w.shape[0] + 1, x.shape[2] + pl + pr - w.shape[1] + 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d(x, w, padding=((0, 0), (0, 0))):
  """Stride-1 convolution of ``x`` [N, H, W, C] with ``w`` [KH, KW, C, O] (float32).

  ``padding`` is ``((top, bottom), (left, right))`` zeros around ``x``, applied implicitly (no
  padded copy); each side must be less than the kernel. Requires :func:`supports`; builds the
  kernels on first use, and raises ``RuntimeError`` (naming why) where they cannot be built.
  """
  (pt, _), (pl, _) = padding
  return _fwd_call(x, w, _out_hw(x, w, padding), pt, pl)


def _conv2d_fwd(x, w, padding):
  return conv2d(x, w, padding), (x, w)


def _conv2d_bwd(padding, residuals, dy):
  x, w = residuals
  kh, kw, c, _ = w.shape
  (pt, pb), (pl, pr) = padding
  dw = _dw_call(x, dy, kh, kw, pt, pl)
  if c % LANES == 0:  # the forward kernel on dy, flipped and transposed: [KH, KW, O, C]
    flipped = jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))
    dx = _fwd_call(dy, flipped, x.shape[1:3], kh - 1 - pt, kw - 1 - pl)
  else:  # the kernel writes whole vectors of channels; few input channels (an image): one dot/tap
    n, h, wd, _ = x.shape
    _, oh, ow, _ = dy.shape
    hp, wp = h + pt + pb, wd + pl + pr
    dx = jnp.zeros((n, hp, wp, c), x.dtype)
    for a in range(kh):
      for b in range(kw):
        part = jnp.einsum('nijo,co->nijc', dy, w[a, b])
        dx = dx + lax.pad(
            part, jnp.zeros((), x.dtype),
            [(0, 0, 0), (a, hp - oh - a, 0), (b, wp - ow - b, 0), (0, 0, 0)],
        )
    dx = dx[:, pt : pt + h, pl : pl + wd]
  return dx, dw


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)
