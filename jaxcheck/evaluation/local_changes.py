"""The loss at a perturbed point, computed from the unperturbed one where the change is local.

Perturbing one entry Wᵢⱼ of a weight matrix by δ changes the product y = x·W in column j
only, by δ·x[:, i]; a following tanh changes in that column only; the next product changes
by a rank-one term. Recomputing everything for every perturbation costs whole matrix
products; following the change costs a column. Each operation is still evaluated as written,
on the perturbed values; only the arithmetic is rearranged around values shared by every
perturbation, which is exact up to rounding (and the shared parts round identically for all
perturbations, so differences of losses carry less rounding noise, not more).

How: the loss is traced to a jaxpr once per compiled program and interpreted equation by
equation (calls are opened, `_jaxpr.call_body`; everything else is applied as a whole).
A perturbed value is held in one of three forms:

- `Slab`: equal to the unperturbed value except on a slab (fixed coordinates on some axes,
  whole extent on the others). A one-hot change of the leaf (full mode) is a slab of one entry.
  Slabs stay slabs through elementwise operations with unperturbed operands, broadcasts, sums,
  transposes and products with an unperturbed operand (contracting a fixed axis turns the slab
  into a dense change of the product, added to the unperturbed product);
- `Direction`: the leaf moved by t·u (fast mode). A product with an unperturbed operand is the
  unperturbed product plus t times the product with u, which does not depend on t, so the steps
  along one direction share it;
- a plain array: any other perturbed value (what every operation without a rule receives).

Operations whose operands are all unperturbed compute the same value for every perturbation,
so `vmap` leaves them unbatched.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _jaxpr

lax = jax.lax

def _zero():
    return jnp.zeros((), np.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class Slab:
    """A value equal to `base` except on a slab, where it is `values`.

    `fixed[d]` is the coordinate of the slab on axis d (a traced scalar), or None for the whole
    axis; `values` has base's shape with the fixed axes of size 1.
    """

    base: Any
    fixed: tuple
    values: Any

    def starts(self) -> list:
        return [_zero() if f is None else f for f in self.fixed]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(1 if f is not None else n for f, n in zip(self.fixed, self.base.shape))

    def part(self, x: Any) -> Any:
        """The slab of an array shaped like `base`."""
        return lax.dynamic_slice(x, self.starts(), self.shape)

    def dense(self) -> Any:
        return lax.dynamic_update_slice(self.base, self.values.astype(self.base.dtype),
                                        self.starts())

    def change(self) -> Any:
        return self.values - self.part(self.base)


@dataclasses.dataclass(eq=False)
class Direction:
    """The leaf (or a view of it) moved by t·u; `record` notes a use of θ + t·u itself."""

    base: Any
    u: Any
    t: Any
    record: list   # shared by the views of one leaf: [True] once θ + t·u was formed

    def dense(self) -> Any:
        self.record[0] = True
        return self.base + jnp.asarray(self.t, self.base.dtype) * self.u


Change = (Slab, Direction)


_bind = _jaxpr.bind


def _dense(x: Any) -> Any:
    return x.dense() if isinstance(x, Change) else x


# ------------------------------------------------------------------ rules for slabs


def _slab_or_dense(base_out, fixed, change_out) -> Any:
    """The unperturbed `base_out` changed by `change_out` on the slab `fixed`."""
    change_out = change_out.astype(base_out.dtype)
    if all(f is None for f in fixed):
        return base_out + change_out
    starts = [_zero() if f is None else f for f in fixed]
    return Slab(base_out, tuple(fixed),
                lax.dynamic_slice(base_out, starts, change_out.shape) + change_out)


def _elementwise(eqn, args, changed):
    """Elementwise op: the output's slab is where every changed operand has its slab.

    Operands may be broadcast along axes of size 1 (jaxprs allow it); a change broadcast
    along an axis spreads over it, so that axis is whole in the output's slab.
    """
    if not all(isinstance(a, Slab) for a, c in zip(args, changed) if c):
        return None
    out_shape = eqn.outvars[0].aval.shape

    def spread(a, d):  # a broadcast along axis d (a scalar along every axis)
        return np.ndim(a) == 0 or np.shape(a)[d] != out_shape[d]

    fixed = []
    for d in range(len(out_shape)):
        coords = [a.fixed[d] for a, c in zip(args, changed) if c and not spread(a.base, d)]
        if any(spread(a.base, d) for a, c in zip(args, changed) if c) \
                or not coords or any(x is not coords[0] for x in coords):
            if any(x is not None for x in coords):
                return None  # a slab would have to grow along d: evaluate densely
            fixed.append(None)
        else:
            fixed.append(coords[0])

    def on_slab(a, c):
        if c:
            return a.values
        if not np.ndim(a):
            return a
        starts = [_zero() if f is None or spread(a, d) else f for d, f in enumerate(fixed)]
        sizes = [1 if f is not None or spread(a, d) else n
                 for d, (f, n) in enumerate(zip(fixed, out_shape))]
        return lax.dynamic_slice(a, starts, sizes)

    base_out = _bind(eqn, [a.base if c else a for a, c in zip(args, changed)])
    values = _bind(eqn, [on_slab(a, c) for a, c in zip(args, changed)])
    return Slab(base_out, tuple(fixed), values)


def _broadcast(eqn, slab: Slab):
    shape, dims = eqn.params["shape"], eqn.params["broadcast_dimensions"]
    fixed = [None] * len(shape)
    for d, e in enumerate(dims):
        if slab.base.shape[d] == shape[e]:
            fixed[e] = slab.fixed[d]
    values_shape = [1 if f is not None else n for f, n in zip(fixed, shape)]
    base_out = _bind(eqn, [slab.base])
    values = _bind(eqn, [slab.values], shape=tuple(values_shape), sharding=None)
    return Slab(base_out, tuple(fixed), values)


def _reduce_sum(eqn, slab: Slab):
    axes = eqn.params["axes"]
    base_out = _bind(eqn, [slab.base])
    fixed = [f for d, f in enumerate(slab.fixed) if d not in axes]
    return _slab_or_dense(base_out, fixed, _bind(eqn, [slab.change()]))


def _transpose(eqn, slab: Slab):
    perm = eqn.params["permutation"]
    return Slab(_bind(eqn, [slab.base]), tuple(slab.fixed[p] for p in perm),
                _bind(eqn, [slab.values]))


def _reshape(eqn, slab: Slab):
    if eqn.params.get("dimensions") is not None or any(f is None for f in slab.fixed):
        return None  # only a single entry is moved (its coordinates recomputed)
    new = eqn.params["new_sizes"]
    flat = jnp.ravel_multi_index(tuple(slab.fixed), slab.base.shape, mode="clip") \
        if slab.fixed else _zero()
    fixed = jnp.unravel_index(flat, new) if new else ()
    return Slab(_bind(eqn, [slab.base]), tuple(jnp.asarray(f, np.int32) for f in fixed),
                slab.values.reshape((1,) * len(new)))


def _slab_product(eqn, slab: Slab, side: int, other):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    s_contract, o_contract = (lc, rc) if side == 0 else (rc, lc)
    s_batch, o_batch = (lb, rb) if side == 0 else (rb, lb)
    # The other operand at the slab's fixed contracting and batch coordinates.
    starts, sizes = [], []
    for dim, size in enumerate(other.shape):
        match = (s_contract[list(o_contract).index(dim)] if dim in o_contract else
                 s_batch[list(o_batch).index(dim)] if dim in o_batch else None)
        at = None if match is None else slab.fixed[match]
        starts.append(_zero() if at is None else at)
        sizes.append(size if at is None else 1)
    other_part = lax.dynamic_slice(other, starts, sizes)
    operands = (slab.change(), other_part) if side == 0 else (other_part, slab.change())
    change_out = _bind(eqn, operands)
    base_out = _bind(eqn, (slab.base, other) if side == 0 else (other, slab.base))
    s_free = [d for d in range(len(slab.fixed)) if d not in s_contract and d not in s_batch]
    o_free = [None] * (other.ndim - len(o_contract) - len(o_batch))
    fixed = [slab.fixed[d] for d in s_batch] + (
        [slab.fixed[d] for d in s_free] + o_free if side == 0
        else o_free + [slab.fixed[d] for d in s_free])
    return _slab_or_dense(base_out, fixed, change_out)


# ------------------------------------------------------------------ rules for directions


def _direction_view(eqn, x: Direction):
    kind = _jaxpr.name(eqn)
    if kind in (_jaxpr.TRANSPOSE, _jaxpr.RESHAPE, _jaxpr.SQUEEZE) or (
            kind == _jaxpr.CONVERT and eqn.params["new_dtype"] == x.base.dtype):
        return Direction(_bind(eqn, [x.base]), _bind(eqn, [x.u]), x.t, x.record)
    return None


def _direction_product(eqn, x: Direction, side: int, other):
    pair = lambda a: (a, other) if side == 0 else (other, a)  # noqa: E731
    base_out = _bind(eqn, pair(x.base))
    return base_out + jnp.asarray(x.t, base_out.dtype) * _bind(eqn, pair(x.u))


# ------------------------------------------------------------------ the interpreter


def _apply(eqn, args, changed, touched_inputs):
    """The output of `eqn` by a rule for its changed operands, or None (no rule applies)."""
    kind = _jaxpr.name(eqn)
    if kind == _jaxpr.DOT:
        for side in (0, 1):
            if changed[side] and not touched_inputs[1 - side]:
                x, other = args[side], args[1 - side]
                if isinstance(x, Slab):
                    return _slab_product(eqn, x, side, other)
                return _direction_product(eqn, x, side, other)
        return None
    single = args[0] if len(args) == 1 else None
    if isinstance(single, Direction):
        return _direction_view(eqn, single)
    if kind in _jaxpr.ELEMENTWISE and not any(t and not c for t, c in zip(touched_inputs, changed)):
        return _elementwise(eqn, args, changed)
    if isinstance(single, Slab):
        rule = {_jaxpr.BROADCAST: _broadcast, _jaxpr.REDUCE_SUM: _reduce_sum,
                _jaxpr.TRANSPOSE: _transpose, _jaxpr.RESHAPE: _reshape}.get(kind)
        return rule(eqn, single) if rule else None
    return None


def _run(jaxpr, consts, invals, perturbed: Sequence[bool]):
    """Evaluate `jaxpr`; `perturbed[k]` says whether input k depends on the perturbation
    (the perturbed leaf is a `Slab` or a `Direction`; other perturbed inputs are arrays)."""
    env: dict = {}
    touched = set()   # vars whose value depends on the perturbation

    def read(v):
        return v.val if _jaxpr.is_literal(v) else env[v]

    def is_touched(v):
        return _jaxpr.is_var(v) and v in touched

    for v, x in zip(jaxpr.constvars, consts):
        env[v] = x
    for v, x, p in zip(jaxpr.invars, invals, perturbed):
        env[v] = x
        if p:
            touched.add(v)
    for eqn in jaxpr.eqns:
        args = [read(v) for v in eqn.invars]
        hit = [is_touched(v) for v in eqn.invars]
        changed = [isinstance(a, Change) for a in args]
        body = _jaxpr.call_body(eqn) if any(hit) else None
        if not any(hit):
            out = _bind(eqn, args)
            outs = out if _jaxpr.multiple_results(eqn) else [out]
        elif body is not None:
            outs = _run(*body, args, hit)
        else:
            out = _apply(eqn, args, changed, hit) if any(changed) else None
            if out is None:
                out = _bind(eqn, [_dense(a) for a in args])
                outs = out if _jaxpr.multiple_results(eqn) else [out]
            else:
                outs = [out]
        if any(hit):
            touched.update(v for v in eqn.outvars if _jaxpr.is_var(v))
        for v, x in zip(eqn.outvars, outs):
            if not _jaxpr.is_dropped(v):
                env[v] = x
    return [read(v) for v in jaxpr.outvars]


@dataclasses.dataclass(frozen=True, eq=False)
class Traced:
    """The loss traced once as a function of the dynamic leaves, evaluated with one leaf changed."""

    closed: Any             # ClosedJaxpr of loss(param_dynamic, arg_dynamic)
    position: int

    def _loss(self, param_dynamic, arg_dynamic, leaf_value) -> Any:
        invals = list(param_dynamic) + list(arg_dynamic)
        invals[self.position] = leaf_value
        perturbed = [k == self.position for k in range(len(invals))]
        out, = _run(self.closed.jaxpr, self.closed.consts, invals, perturbed)
        return _dense(out)

    def at_entry(self, param_dynamic, arg_dynamic, index, value) -> Any:
        """The loss with flat entry `index` of the leaf set to `value`."""
        base = param_dynamic[self.position]
        coords = jnp.unravel_index(index, base.shape) if base.ndim else ()
        slab = Slab(base, tuple(jnp.asarray(c, np.int32) for c in coords),
                    jnp.asarray(value, base.dtype).reshape((1,) * base.ndim))
        return self._loss(param_dynamic, arg_dynamic, slab)

    def along(self, param_dynamic, arg_dynamic, u, t) -> tuple[Any, bool]:
        """The loss at θ + t·u (u flat), and whether it is the loss at that exact point.

        Exact when every use of the leaf is a product (formed as θ·x + t·(u·x)); otherwise
        some operation received θ + t·u rounded to the leaf's dtype.
        """
        base = param_dynamic[self.position]
        record = [False]
        leaf = Direction(base, u.reshape(base.shape), t, record)
        return self._loss(param_dynamic, arg_dynamic, leaf), not record[0]


def trace(loss: Callable[..., Any], position: int, param_dynamic: Sequence[Any],
          arg_dynamic: Sequence[Any]) -> Traced | None:
    """`loss(param_dynamic, arg_dynamic)` as a jaxpr to interpret, or None (evaluate directly).

    Tracing errors are left to the direct evaluation, which reports them in the user's terms.
    """
    def spec(x):  # shapes only: `trace` may be called on tracers, inside a jit
        aval = jax.typeof(x)
        return jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=aval.weak_type)

    try:
        closed = _jaxpr.trace(loss, tuple(map(spec, param_dynamic)),
                              tuple(map(spec, arg_dynamic)))
    except Exception:
        return None
    n_in = len(param_dynamic) + len(arg_dynamic)
    if len(closed.jaxpr.invars) != n_in or len(closed.jaxpr.outvars) != 1:
        return None
    return Traced(closed, position)
