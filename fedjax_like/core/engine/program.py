"""Client work as a loop: :class:`ClientLoop` and the engine's unit of work, :class:`Program`.

Every per-client computation that walks a client's data is three pure functions over pytrees, in
the spirit of FedJAX's ``client_init / client_step / client_final`` and written as an optax-style
NamedTuple (:class:`ClientLoop`):

    init(shared, client_input)   -> carry      once per client, before its first step
    step(carry, batch, mask)     -> carry      once per REAL step (batch: one step's pytree of
                                               [batch_size, ...] arrays, mask: bool [batch_size])
    finish(shared, carry)        -> output     once per client, after its last step

The engine owns the loop over steps: it calls ``step`` only on a client's real steps (those whose
mask has any True entry), in order, and never on padding, so ``step`` needs no padding logic of
its own beyond weighing examples by ``mask``. Which loop runs them (a ``while_loop`` over the real
steps, a ``scan`` with ``cond``, an unrolled sequence, or lanes that run several clients back to
back) is the engine's choice (:mod:`.runners`, :mod:`.lanes`).

A :class:`Program` is what the Federated Core hands the engine: a client loop (or a plain
per-client function, a loop without steps) bound to its per-client arguments ``args`` (with
``in_axes``: ``0`` per client, ``None`` broadcast) and the client data it steps over ``data =
(batches, mask)`` with leaves ``[clients, steps, batch_size, ...]`` and ``mask`` bool
``[clients, steps, batch_size]``. ``federated_map`` over a program's value composes into its
``finish``; zipping programs combines them into one (:func:`combine`), so a round of client
training, its metrics and the aggregator's per-client work run as one program, one client at a
time through ``init`` -> steps -> ``finish``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any


class ClientLoop(NamedTuple):
  """A per-client computation over the client's steps (see the module docstring).

  Attributes:
    init: ``(shared, client_input) -> carry``.
    step: ``(carry, batch, mask) -> carry``; ``batch`` is one step's pytree of
      ``[batch_size, ...]`` arrays and ``mask`` bool ``[batch_size]`` (its real examples). Called
      only on real steps.
    finish: ``(shared, carry) -> output``.
  """

  init: Callable[[PyTree, PyTree], PyTree]
  step: Callable[[PyTree, PyTree, jax.Array], PyTree]
  finish: Callable[[PyTree, PyTree], PyTree]


@dataclasses.dataclass(frozen=True, eq=False)
class Program:
  """One per-client computation bound to its arguments (see the module docstring).

  Attributes:
    init: ``(*client_args) -> carry``.
    step: ``(carry, batch, mask) -> carry``, or None for a computation without steps.
    finish: ``(*client_args, carry) -> output``.
    args: the arguments, per client ``[clients, ...]`` (``in_axes`` 0) or broadcast (None).
    in_axes: one entry per argument.
    data: ``(batches, mask)`` per client (``[clients, steps, batch_size, ...]``), or None.
    core: the identity of the loop (``init``, ``step`` and the first ``init_arity`` arguments):
      programs derived from one program by :meth:`then` and :meth:`with_arg` share it, so
      :func:`combine` runs their loop once and applies each one's ``finish`` to the same carry.
    init_arity: how many leading arguments ``init`` reads.
    parts, merge: for a program made by :func:`combine`, the single-loop programs it runs and
      ``merge(their outputs) -> output``, so combining it again flattens it (a loop is never
      run twice because two derived values were combined separately).
  """

  init: Callable[..., PyTree]
  step: Callable[..., PyTree] | None
  finish: Callable[..., PyTree]
  args: tuple
  in_axes: tuple
  data: tuple | None = None
  core: object = dataclasses.field(default_factory=object)
  init_arity: int | None = None
  parts: tuple | None = None
  merge: Callable[[tuple], PyTree] | None = None

  def __post_init__(self):
    if self.init_arity is None:
      object.__setattr__(self, 'init_arity', len(self.args))

  @staticmethod
  def of_function(fn: Callable[..., PyTree], args, in_axes) -> Program:
    """``fn(*client_args)`` per client, as a program without steps."""
    return Program(lambda *a: (), None, lambda *a: fn(*a[:-1]), tuple(args), tuple(in_axes))

  @staticmethod
  def of_loop(loop: ClientLoop, shared, shared_axis, client_input, input_axis, data) -> Program:
    """``loop`` over ``data`` with its ``shared`` and ``client_input`` arguments."""
    return Program(
        loop.init,
        loop.step,
        lambda shared, client_input, carry: loop.finish(shared, carry),
        (shared, client_input),
        (shared_axis, input_axis),
        data if hasattr(data, 'mask') else tuple(data),  # a CohortData keeps its plan
    )

  def then(self, fn: Callable[[PyTree], PyTree]) -> Program:
    """The program whose output is ``fn(output)`` (same loop)."""
    finish, merge = self.finish, self.merge
    return dataclasses.replace(
        self, finish=lambda *a: fn(finish(*a)),
        merge=None if merge is None else (lambda outs: fn(merge(outs))),
    )

  def with_arg(self, arg, axis, fn: Callable[[PyTree, PyTree], PyTree]) -> Program:
    """The program whose output is ``fn(output, arg_i)`` for one more argument ``arg`` (same
    loop: ``init`` still reads only the first ``init_arity`` arguments)."""
    if self.parts is not None:
      extra = Program.of_function(lambda x: x, (arg,), (axis,))
      return combine((self, extra), None).then(lambda outs: fn(*outs))
    finish = self.finish

    def new_finish(*a):
      return fn(finish(*a[:-2], a[-1]), a[-2])

    return dataclasses.replace(
        self, finish=new_finish, args=self.args + (arg,), in_axes=self.in_axes + (axis,)
    )

  @property
  def num_clients(self) -> int:
    sizes = {
        leaf.shape[0]
        for arg, axis in zip(self.args, self.in_axes)
        if axis == 0
        for leaf in jax.tree.leaves(arg)
    }
    if self.data is not None:
      sizes.add(data_clients(self.data))
    if len(sizes) != 1:
      raise ValueError(
          'Per-client arguments must share one leading cohort axis; got sizes '
          f'{sorted(sizes) or "none (no per-client argument)"}.'
      )
    return sizes.pop()


def data_clients(data) -> int:
  """The number of clients of a program's ``data`` (a ``(batches, mask)`` pair or CohortData)."""
  size = getattr(data, 'num_clients', None)
  return int(size) if size is not None else int(data[1].shape[0])


def client_data_type(data) -> PyTree:
  """One client's ``(batches, mask)`` of a program's ``data``, as ``jax.ShapeDtypeStruct``s."""
  if hasattr(data, 'client_type'):
    return data.client_type()
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), tuple(data))


def same_data(a, b) -> bool:
  """Whether two programs' ``data`` are the very same arrays (so their loops can step together)."""
  if a is None or b is None:
    return a is b
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(x is y for x, y in zip(la, lb))


def _flatten(p: Program) -> tuple[tuple[Program, ...], Callable[[tuple], PyTree]]:
  """``(single-loop parts, merge)`` of a program: ``output = merge(parts' outputs)``."""
  if p.parts is None:
    return (p,), lambda outs: outs[0]
  return p.parts, p.merge


def combine(programs: tuple[Program, ...], materialize: Callable[[Program], PyTree] | None
            ) -> Program:
  """One program whose output is the tuple of the programs' outputs.

  The programs share one client loop: at most one distinct ``data`` is stepped over. Programs of
  one ``core`` (derived from one program by ``then``/``with_arg``, or parts of earlier
  combinations) run that loop once, each applying its own ``finish`` to the shared carry; programs
  of other cores over the very same data step together, each with its own carry. A program over
  other data is run first by ``materialize`` (``program -> stacked outputs [clients, ...]``) and
  joins as a stored value. Arguments passed to several programs are passed once.
  """
  data = next((p.data for p in programs if p.data is not None), None)
  parts, spans, merges = [], [], []
  for p in programs:
    if p.data is not None and not same_data(p.data, data):
      if materialize is None:
        raise ValueError('combine: programs over different data need a materialize function.')
      p = Program.of_function(lambda x: x, (materialize(p),), (0,))
    own, merge = _flatten(p)
    for q in own:
      if not any(q is r for r in parts):
        parts.append(q)
    spans.append(tuple(next(i for i, r in enumerate(parts) if r is q) for q in own))
    merges.append(merge)
  args, in_axes, where = [], [], []  # where[j]: the indices of part j's arguments in `args`
  for q in parts:
    index = []
    for arg, axis in zip(q.args, q.in_axes):
      k = next((i for i, (a, x) in enumerate(zip(args, in_axes)) if a is arg and x == axis), None)
      if k is None:
        k = len(args)
        args.append(arg)
        in_axes.append(axis)
      index.append(k)
    where.append(tuple(index))
  cores, core_of = [], []  # cores: the first part of each core; core_of[j]: part j's core
  for j, q in enumerate(parts):
    k = next((i for i, first in enumerate(cores) if parts[first].core is q.core), None)
    if k is None:
      k = len(cores)
      cores.append(j)
    core_of.append(k)
  steppers = [i for i, j in enumerate(cores) if parts[j].step is not None]

  def init(*flat):
    return tuple(
        parts[j].init(*(flat[i] for i in where[j][: parts[j].init_arity])) for j in cores
    )

  def step(carry, batch, mask):
    carry = list(carry)
    for i in steppers:
      carry[i] = parts[cores[i]].step(carry[i], batch, mask)
    return tuple(carry)

  def merge(outs):
    return tuple(m(tuple(outs[i] for i in span)) for m, span in zip(merges, spans))

  def finish(*flat):
    *flat, carry = flat
    return merge(tuple(
        q.finish(*(flat[i] for i in where[j]), carry[core_of[j]]) for j, q in enumerate(parts)
    ))

  return Program(init, step if steppers else None, finish, tuple(args), tuple(in_axes), data,
                 parts=tuple(parts), merge=merge)


# ----- one client's loop --------------------------------------------------------------------------


def real_steps(mask: jax.Array) -> jax.Array:
  """``[steps]``: the steps of one client holding at least one real example."""
  return jnp.any(mask.reshape(mask.shape[0], -1), axis=1)


class ClientSlice(NamedTuple):
  """One client's data read in place: the cohort's ``batches`` (leaves ``[clients, steps, ...]``),
  ``mask`` (bool ``[clients, steps, batch_size]``) and the client's ``index`` (int32 scalar).

  A loop over clients hands its body this view instead of the client's slice, so the step loop
  reads each step straight from the cohort's arrays: a sliced client would be copied into a
  buffer of its own before an inner loop could read it.
  """

  batches: PyTree
  mask: jax.Array
  index: jax.Array


def _step_reader(batches: PyTree, mask: jax.Array, client: jax.Array | None):
  """``(read(s) -> (batch, mask) of step s, the client's mask [steps, batch_size])``."""

  def one(a, *index):
    start = index + (0,) * (a.ndim - len(index))
    return jax.lax.dynamic_slice(a, start, (1,) * len(index) + a.shape[len(index):]).reshape(
        a.shape[len(index):])

  if client is None:
    return lambda s: jax.tree.map(lambda a: one(a, s), (batches, mask)), mask
  own_mask = one(mask, client)
  return lambda s: jax.tree.map(lambda a: one(a, client, s), (batches, mask)), own_mask


def loop_steps(step: Callable, carry: PyTree, batches: PyTree, mask: jax.Array, kind: str,
               client: jax.Array | None = None):
  """``carry = step(carry, batch_s, mask_s)`` over one client's real steps ``s``, in order.

  Args:
    step: the client loop's step.
    carry: the carry from ``init``.
    batches: pytree of ``[steps, batch_size, ...]`` (with ``client``: ``[clients, steps, ...]``).
    mask: bool ``[steps, batch_size]`` (with ``client``: ``[clients, steps, batch_size]``).
    kind: ``'while'`` (a ``while_loop`` over the real steps' indices: its trip count is the number
      of real steps), ``'scan'`` (a ``scan`` over every step, each a ``cond``) or ``'unrolled'``.
    client: the client's index into ``batches`` and ``mask`` when they hold the whole cohort (see
      :class:`ClientSlice`), else None.
  """
  read, own_mask = _step_reader(batches, mask, client)
  active = real_steps(own_mask)
  if kind in ('scan', 'unrolled'):

    def body(c, inputs):
      s, on = inputs
      return jax.lax.cond(on, lambda c: step(c, *read(s)), lambda c: c, c), None

    steps = jnp.arange(own_mask.shape[0], dtype=jnp.int32)
    return jax.lax.scan(body, carry, (steps, active), unroll=kind == 'unrolled')[0]
  # The real steps' indices first, in order (a stable sort), and how many there are. On a packed
  # cohort they are the leading steps, but any mask is exact.
  order = jnp.argsort(~active, stable=True).astype(jnp.int32)
  count = jnp.sum(active, dtype=jnp.int32)

  def body(state):
    i, c = state
    return i + 1, step(c, *read(order[i]))

  return jax.lax.while_loop(lambda state: state[0] < count, body, (jnp.int32(0), carry))[1]


def client_function(program: Program, kind: str, step: Callable | None = None):
  """``f(broadcast, mapped, data_i) -> output`` for one client: init, its steps, finish.

  ``broadcast`` and ``mapped`` are the program's arguments split by ``in_axes`` (``mapped`` as one
  client's slice); ``data_i`` is the client's ``(batches, mask)`` or a :class:`ClientSlice`;
  ``step`` overrides the program's (the engine passes the lowered one).
  """
  step = step or program.step
  axes = program.in_axes

  def call(broadcast, mapped, data):
    b, m = iter(broadcast), iter(mapped)
    args = tuple(next(m) if ax == 0 else next(b) for ax in axes)
    carry = program.init(*args[: program.init_arity])
    if step is not None:
      client = data.index if isinstance(data, ClientSlice) else None
      carry = loop_steps(step, carry, data[0], data[1], kind, client)
    return program.finish(*args, carry)

  return call


def split_args(program: Program) -> tuple[tuple, tuple]:
  """``(broadcast, mapped)``: the program's arguments by ``in_axes``."""
  broadcast = tuple(a for a, ax in zip(program.args, program.in_axes) if ax is None)
  mapped = tuple(a for a, ax in zip(program.args, program.in_axes) if ax == 0)
  return broadcast, mapped


def output_type(program: Program) -> PyTree:
  """One client's output as a pytree of ``jax.ShapeDtypeStruct`` (traced abstractly)."""
  broadcast, mapped = split_args(program)
  one = lambda t: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), t)  # noqa: E731
  data = client_data_type(program.data) if program.data is not None else ()
  return jax.eval_shape(client_function(program, 'scan'), broadcast, one(mapped), data)
