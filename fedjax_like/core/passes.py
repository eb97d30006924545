"""Engine passes: the reductions of one computation, run together over the clients.

Reductions are *lazy*. ``federated_sum`` (and ``federated_mean``, ``federated_secure_sum``) does
not run the clients: it records a :class:`Request` (the per-client program and how its output
comes back, summed or stacked) in the computation's :class:`PassScope` and returns a SERVER value
whose array is computed when it is first read. Server-side work on such values
(``federated_map(fn, x@SERVER)``) stays lazy too. When a value is read, the scope runs *every*
pending request in one engine pass per cohort data (:meth:`PassScope.flush`): their programs are
combined (:func:`~fedjax_like.core.engine.combine`: a client loop shared by several requests runs
once) and handed to ``engine.run``, which sums some outputs and stacks others in the same pass.

So a round written as TFF's plain chain,

    client_work.next -> {update, weight}@CLIENTS, metrics = federated_sum(...)     (pending)
    aggregator.next  -> federated_sum(clip(update) * w), federated_sum(w), counts   (pending)
    finalizer.next   -> reads the aggregate                                         (one pass)

runs local training once per client, in one pass, with the aggregator's per-client work fused
after it, whatever the aggregator is, as long as it is written with the intrinsics. A value read
before the round's other reductions are requested (``federated_sum(x).value`` in the middle of an
aggregator) is still correct; it costs one more pass. An aggregator that needs every client's
value (a median) reads the deferred client value itself: that is a ``'stack'`` request, and it
joins the same pass.

Outside a :func:`~fedjax_like.core.computation.federated_computation` (values made by hand) there
is no scope: each request runs at once.
"""

from __future__ import annotations

import contextlib
from typing import Any

import jax

from fedjax_like.core.engine import Engine, Program, combine, same_data

PyTree = Any
_UNSET = object()


class Request:
  """A reduction asked of the clients.

  Attributes:
    program: the per-client :class:`~fedjax_like.core.engine.Program`.
    reduce: ``'sum'`` (over the real clients: the program masks padding clients itself) or
      ``'stack'`` (``[clients, ...]``).
    engine: the :class:`~fedjax_like.core.engine.Engine` to run it on.
    label: who asked, for the memory check's message (``'stack'`` requests).
  """

  def __init__(self, program: Program, reduce: str, engine: Engine, label: str | None = None):
    if reduce not in ('sum', 'stack'):
      raise ValueError(f"reduce must be 'sum' or 'stack'; got {reduce!r}.")
    self.program, self.reduce, self.engine, self.label = program, reduce, engine, label
    self.result = _UNSET

  @property
  def done(self) -> bool:
    return self.result is not _UNSET


class PassScope:
  """The pending requests of one traced computation, and the passes that ran them.

  Attributes:
    passes: the engine passes run so far, each a tuple of its requests (read by tests and the
      memory check: which computations stacked every client's value).
  """

  def __init__(self):
    self._pending: list[Request] = []
    self._label: str | None = None
    self.passes: list[tuple[Request, ...]] = []

  def request(self, program: Program, reduce: str, engine: Engine,
              label: str | None = None) -> Request:
    """Records a reduction to run at the next flush (labeled by the innermost
    :meth:`labeled` block when no ``label`` is given)."""
    request = Request(program, reduce, engine, label or self._label)
    self._pending.append(request)
    return request

  @contextlib.contextmanager
  def labeled(self, label: str):
    """Labels the requests made inside the block (``'the aggregator ...'``): a stack request so
    labeled is named by the memory check as holding every client's value."""
    previous, self._label = self._label, label
    try:
      yield self
    finally:
      self._label = previous

  def result(self, request: Request) -> PyTree:
    """The request's result, running the pending requests first if it has not run."""
    if not request.done:
      self.flush()
    return request.result

  def flush(self) -> None:
    """Runs every pending request: one engine pass per cohort data and engine."""
    while self._pending:
      pending, self._pending = self._pending, []
      groups: list[list[Request]] = []
      for r in pending:
        group = next((g for g in groups if _fits(g[0], r)), None)
        if group is None:
          groups.append([r])
        else:
          group.append(r)
      for group in groups:
        run_pass(group, self)
        self.passes.append(tuple(group))

  @property
  def stacked_by(self) -> tuple[str, ...]:
    """The labels of the stack requests run so far (what held every client's value)."""
    return tuple(dict.fromkeys(
        r.label for p in self.passes for r in p if r.reduce == 'stack' and r.label
    ))


def _fits(a: Request, b: Request) -> bool:
  """Whether two requests can share a pass: one engine, one cohort, the same (or no) data."""
  if a.engine != b.engine:
    return False
  pa, pb = a.program, b.program
  if pa.data is not None and pb.data is not None:
    return same_data(pa.data, pb.data)
  try:
    return pa.num_clients == pb.num_clients
  except ValueError:
    return False


def run_pass(requests: list[Request], scope: PassScope | None = None) -> None:
  """Runs ``requests`` (one cohort) in one engine pass and stores each one's result."""
  engine = requests[0].engine

  def materialize(program: Program) -> PyTree:
    request = Request(program, 'stack', engine)
    run_pass([request], scope)
    return request.result

  combined = combine(tuple(r.program for r in requests), materialize)
  sums = [i for i, r in enumerate(requests) if r.reduce == 'sum']
  stacks = [i for i, r in enumerate(requests) if r.reduce == 'stack']
  program = combined.then(
      lambda outs: (tuple(outs[i] for i in sums), tuple(outs[i] for i in stacks))
  )
  summed, stacked = engine.run(program)
  for i, value in zip(sums, summed):
    requests[i].result = value
  for i, value in zip(stacks, stacked):
    requests[i].result = value


def run_now(program: Program, reduce: str, engine: Engine) -> PyTree:
  """Runs one request at once (no scope)."""
  request = Request(program, reduce, engine)
  run_pass([request])
  return request.result


def abstract(tree: PyTree) -> PyTree:
  """``jax.ShapeDtypeStruct``s of a pytree of arrays (or of shape structs)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jax.numpy.shape(x), x.dtype), tree)
