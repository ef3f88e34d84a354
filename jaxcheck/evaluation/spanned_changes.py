"""Changes that span every row but few directions of the features: followed through norms.

A weight entry of an attention's output projection changes one feature of every position
(a column); the residual stream carries that column into a layer norm, whose statistics then
change in every row, and the next product would see a change everywhere (`local_changes`
evaluates it densely: a whole product per point). Yet the change stays in a few directions of
the features: the normalised rows are the unperturbed rows, rescaled per row, plus multiples
of a few vectors. Written so, a product with an unperturbed weight costs a few columns per
point, and the product of the rows with the weight is shared by every point.

Forms (features on the last axis; "rows" are the leading axes):

- `Spanned`: base + Σₘ αₘ·Fₘ + A·C: per-row scales αₘ (a point's) of unperturbed arrays Fₘ
  (shared by every point), and a few directions C (k × features) with per-row coefficients
  A (rows × k);
- `RowScaled`: a row statistic broadcast over the features, times an unperturbed vector u of
  the features (r ⊗ u): a norm's 1/σ (times its gain);
- `Changed`: any other value computed whole beside its unperturbed value, so that a statistic
  of the rows (a mean, a variance) keeps both: what `RowScaled` needs.

Each operation is evaluated as written on the perturbed values, rearranged around values
shared by every point, as `local_changes` does: exact up to rounding.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _jaxpr

lax = jax.lax


@dataclasses.dataclass(frozen=True, eq=False)
class Changed:
    """A perturbed value computed whole (`value`), beside its unperturbed value (`base`)."""

    base: Any
    value: Any

    def dense(self) -> Any:
        return self.value


@dataclasses.dataclass(frozen=True, eq=False)
class Spanned:
    """base + Σₘ scales[m][..., None]·fixed[m] + coef @ vecs, features on the last axis."""

    base: Any                 # (*rows, f)
    scaled: tuple             # ((α (*rows,), F (*rows, f) unperturbed), ...)
    coef: Any                 # (*rows, k)
    vecs: Any                 # (k, f)

    def change(self) -> Any:
        out = _few_columns(self.coef, self.vecs).astype(self.base.dtype)
        for alpha, fixed in self.scaled:
            out = out + alpha[..., None] * fixed
        return out

    @functools.cached_property
    def _dense(self) -> Any:   # formed once, however many operations read it
        return self.base + self.change()

    def dense(self) -> Any:
        return self._dense

    def negated(self, base: Any) -> Spanned:
        return Spanned(base, tuple((-a, f) for a, f in self.scaled), -self.coef, self.vecs)


@dataclasses.dataclass(frozen=True, eq=False)
class RowScaled:
    """r[..., None]·unit, where r (*rows,) changed from `r_base`; `unit` (f,) unperturbed, or
    None for ones."""

    r_base: Any
    r: Any
    unit: Any
    features: int

    def _unit(self, dtype: Any) -> Any:
        return jnp.ones((self.features,), dtype) if self.unit is None else self.unit

    @property
    def base(self) -> Any:
        return self.r_base[..., None] * self._unit(self.r_base.dtype)

    def dense(self) -> Any:
        return self.r[..., None] * self._unit(self.r.dtype)

    def spanned(self) -> Spanned:
        unit = self._unit(self.r.dtype)
        return Spanned(self.base, (), (self.r - self.r_base)[..., None], unit[None, :])


# Up to this many directions, coef @ vecs is written as k scaled rows added up: batched over
# points, a product with a contraction this short runs as many tiny matrix products, which XLA
# does not fuse with the elementwise operations that read it (measured on the d = 64
# transformer block's output-projection entries, float64: 227 -> 138 us a point in batches of
# 64, 150 -> 129 us in batches of 256)
FEW_DIRECTIONS = 8


def _few_columns(coef: Any, vecs: Any) -> Any:
    """coef @ vecs (*rows, k) x (k, f), as a sum of k outer products where k is small."""
    k = np.shape(vecs)[0]
    if k > FEW_DIRECTIONS:
        return jnp.matmul(coef, vecs)
    out = coef[..., 0:1] * vecs[0]
    for m in range(1, k):
        out = out + coef[..., m:m + 1] * vecs[m]
    return out


Structured = (Changed, Spanned, RowScaled)
_LINEAR = frozenset({"add", "sub", "mul", "div", "neg"})


def _kind_of(u: Any, ndim: int) -> str:
    """How an unperturbed operand varies: 'scalar', 'features' (constant along the rows),
    'rows' (constant along the features) or 'full'."""
    shape = np.shape(u)
    if not shape or all(k == 1 for k in shape):
        return "scalar"
    if len(shape) != ndim:
        return "full"
    if all(k == 1 for k in shape[:-1]):
        return "features"
    if shape[-1] == 1:
        return "rows"
    return "full"


def _row_part(u: Any) -> Any:   # (*rows, 1) -> (*rows,)
    return jnp.reshape(u, np.shape(u)[:-1])


def _feature_part(u: Any) -> Any:   # (1, ..., 1, f) -> (f,)
    return jnp.reshape(u, np.shape(u)[-1:])


def _scale_rows(s: Spanned, base: Any, by: Any, op: Any) -> Spanned:
    """s with its change's rows combined with `by` (*rows,) by `op` (multiply or divide)."""
    return Spanned(base, tuple((op(a, by), f) for a, f in s.scaled), op(s.coef, by[..., None]),
                   s.vecs)


def _scale_features(s: Spanned, base: Any, by: Any, op: Any) -> Spanned:
    """s with its change's features combined with `by` (f,) by `op`."""
    return Spanned(base, tuple((a, op(f, by)) for a, f in s.scaled), s.coef, op(s.vecs, by))


def _sum(a: Spanned, b: Spanned, base: Any, sign: float) -> Spanned:
    coef = jnp.concatenate([a.coef, sign * b.coef.astype(a.coef.dtype)], axis=-1)
    vecs = jnp.concatenate([a.vecs, b.vecs.astype(a.vecs.dtype)], axis=0)
    return Spanned(base, a.scaled + tuple((sign * x, f) for x, f in b.scaled), coef, vecs)


def _times_row_scaled(s: Spanned, r: RowScaled, base: Any, divide: bool) -> Spanned | None:
    """(X + D)·(r' ⊗ u) = X·(r ⊗ u) + (r' − r)·(X·u) + r'·(D·u); divided: u must be ones,
    and (X + D)/r' = X/r + (1/r' − 1/r)·X + D/r'."""
    x = s.base
    if divide:
        if r.unit is not None:
            return None
        step = 1 / r.r - 1 / r.r_base
        moved = _scale_rows(s, base, r.r, jnp.divide)
        return Spanned(base, ((step, x),) + moved.scaled, moved.coef, moved.vecs)
    scaled = s if r.unit is None else _scale_features(s, base, r.unit, jnp.multiply)
    moved = _scale_rows(scaled, base, r.r, jnp.multiply)
    xu = x if r.unit is None else x * r.unit
    return Spanned(base, ((r.r - r.r_base, xu),) + moved.scaled, moved.coef, moved.vecs)


def _as_form(a: Any, like_ndim: int, features: int) -> Any:
    """A `Changed` of shape (*rows, 1) beside operands with features: a `RowScaled`."""
    if isinstance(a, Changed) and np.ndim(a.value) == like_ndim and features != 1 \
            and np.shape(a.value)[-1] == 1:
        return RowScaled(_row_part(a.base), _row_part(a.value), None, features)
    return a


def elementwise(eqn: Any, args: Sequence[Any], changed: Sequence[bool],
                bases: Sequence[Any]) -> Any:
    """An elementwise operation on structured changes: sums, products and quotients keep the
    form where they can; anything else is computed whole beside its base (`Changed`).
    `bases`: each operand's unperturbed value."""
    kind = _jaxpr.name(eqn)
    out_shape = eqn.outvars[0].aval.shape
    base_out = _jaxpr.bind(eqn, list(bases))
    if kind in _LINEAR and len(out_shape) >= 2:
        out = _linear(kind, args, changed, base_out, out_shape)
        if out is not None:
            return out
    values = [x.dense() if c else x for x, c in zip(args, changed)]
    return Changed(base_out, _jaxpr.bind(eqn, values))


def _linear(kind: str, args: Sequence[Any], changed: Sequence[bool], base_out: Any,
            out_shape: tuple) -> Any:
    ndim, f = len(out_shape), out_shape[-1]
    args = [_as_form(a, ndim, f) if c else a for a, c in zip(args, changed)]
    if any(isinstance(a, Changed) for a, c in zip(args, changed) if c):
        return None
    if any(c and np.shape(a.base) != tuple(out_shape) for a, c in zip(args, changed)):
        return None   # a structured operand broadcast: not followed
    if kind == "neg":
        a = args[0]
        if isinstance(a, RowScaled):
            return RowScaled(-a.r_base, -a.r, a.unit, f)
        return a.negated(base_out)
    (a, b), (ca, cb) = args, changed
    if kind in ("add", "sub"):
        sign = 1.0 if kind == "add" else -1.0
        sa = a.spanned() if isinstance(a, RowScaled) else a
        sb = b.spanned() if isinstance(b, RowScaled) else b
        if ca and cb:
            return _sum(sa, sb, base_out, sign)
        if ca:
            return Spanned(base_out, sa.scaled, sa.coef, sa.vecs)
        return sb.negated(base_out) if sign < 0 else Spanned(base_out, sb.scaled, sb.coef,
                                                             sb.vecs)
    divide = kind == "div"
    if ca and cb:
        if isinstance(a, RowScaled) and isinstance(b, RowScaled) and not divide:
            unit = a.unit if b.unit is None else b.unit if a.unit is None else a.unit * b.unit
            return RowScaled(a.r_base * b.r_base, a.r * b.r, unit, f)
        if isinstance(b, RowScaled) and isinstance(a, (Spanned, RowScaled)):
            sa = a.spanned() if isinstance(a, RowScaled) else a
            return _times_row_scaled(sa, b, base_out, divide)
        if isinstance(a, RowScaled) and isinstance(b, Spanned) and not divide:
            return _times_row_scaled(b, a, base_out, False)
        return None
    s, u = (a, b) if ca else (b, a)
    if divide and not ca:
        return None   # u / change: not linear in the change
    op = jnp.divide if divide else jnp.multiply
    how = _kind_of(u, ndim)
    if isinstance(s, RowScaled):
        if how == "scalar":
            return RowScaled(op(s.r_base, jnp.reshape(u, ())), op(s.r, jnp.reshape(u, ())),
                             s.unit, f)
        if how == "features" and not divide:
            v = _feature_part(u)
            return RowScaled(s.r_base, s.r, v if s.unit is None else s.unit * v, f)
        s = s.spanned()
    if how == "scalar":
        return _scale_rows(s, base_out, jnp.broadcast_to(jnp.reshape(u, ()), out_shape[:-1]),
                           op)
    if how == "features":
        return _scale_features(s, base_out, _feature_part(u), op)
    if how == "rows":
        return _scale_rows(s, base_out, _row_part(u), op)
    return None


def reduce_sum(eqn: Any, x: Any) -> Any:
    """A sum over the features of a `Spanned` value: the rows' sums, changed (`Changed`);
    any other sum of a structured value: computed whole beside its base."""
    axes = tuple(eqn.params["axes"])
    base_out = _jaxpr.bind(eqn, [x.base])
    if isinstance(x, RowScaled):
        x = x.spanned()
    if isinstance(x, Spanned) and axes == (np.ndim(x.base) - 1,):
        change = jnp.matmul(x.coef, jnp.sum(x.vecs, axis=-1)).astype(base_out.dtype)
        for alpha, fixed in x.scaled:
            change = change + alpha * jnp.sum(fixed, axis=-1)
        return Changed(base_out, base_out + change)
    return Changed(base_out, _jaxpr.bind(eqn, [x.dense()]))


def broadcast(eqn: Any, x: Changed) -> Any:
    """A row statistic broadcast over a new (or size-1) last axis of features: a `RowScaled`;
    any other broadcast keeps both values."""
    shape, dims = tuple(eqn.params["shape"]), tuple(eqn.params["broadcast_dimensions"])
    n = np.ndim(x.value)
    rows = shape[:-1]
    if len(shape) >= 2 and shape[-1] > 1 and (
            (n == len(shape) - 1 and dims == tuple(range(n)) and np.shape(x.value) == rows)
            or (n == len(shape) and dims == tuple(range(n))
                and np.shape(x.value) == rows + (1,))):
        return RowScaled(jnp.reshape(x.base, rows), jnp.reshape(x.value, rows), None,
                         shape[-1])
    return Changed(_jaxpr.bind(eqn, [x.base]), _jaxpr.bind(eqn, [x.value]))


def product(eqn: Any, x: Any, other: Any) -> Spanned | None:
    """x (`Spanned` or `RowScaled`, rows first) times an unperturbed matrix on its features:
    X·W shared, then each term's product: Fₘ·W (shared) and C·W (k rows)."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    if isinstance(x, RowScaled):
        x = x.spanned()
    base = x.base
    if lb or rb or tuple(lc) != (np.ndim(base) - 1,) or tuple(rc) != (0,) or np.ndim(other) != 2:
        return None
    base_out = _jaxpr.bind(eqn, [base, other])
    dtype = base_out.dtype
    scaled = tuple((a, _jaxpr.bind(eqn, [f, other])) for a, f in x.scaled)
    vecs = lax.dot_general(x.vecs.astype(dtype), other.astype(dtype), (((1,), (0,)), ((), ())),
                           precision=eqn.params.get("precision"))
    return Spanned(base_out, scaled, x.coef.astype(dtype), vecs)
