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
A perturbed value is held in one of these forms:

- `Slab`: equal to the unperturbed value except on a slab (fixed coordinates on some axes,
  whole extent on the others). A one-hot change of the leaf (full mode) is a slab of one entry.
  Slabs stay slabs through elementwise operations (an axis where operands' slabs differ, or
  one is broadcast, becomes whole), broadcasts, sums, transposes, squeezes and reshapes that
  split or merge whole axes (an attention head's features) or fixed ones, and products with an
  unperturbed operand (contracting a fixed axis turns the slab into a dense change of the
  product, added to the unperturbed product), or of two slabs on the same batch coordinates.
  The layers people use: a convolution kernel entry changes one output feature (the input
  window it reads, times δ), a changed input feature changes its batch elements (its patches
  times the kernel's slice); pooling windows, reductions and cumulative sums keep a change on
  the axes they do not mix (a row of a softmax, log-softmax, layer or RMS norm: the reduction
  over the row, then its broadcast back); a gather keeps a changed table's unindexed feature
  (an embedding entry changes one feature of the tokens that use its row) and batching axes
  (`take_along_axis`); a dynamic slice moves the slab into its window; a scatter-add into a
  changed operand leaves the change where it is;
- `Direction`: the leaf moved by t·u (fast mode). A product with an unperturbed operand is the
  unperturbed product plus t times the product with u, which does not depend on t, so the steps
  along one direction share it;
- the forms of `spanned_changes`: a change that reaches every row in a few directions of the
  features (a column of a residual stream after a layer norm), which the next product takes as
  a few columns; a slab of columns joins them where no slab rule applies;
- `Subset`: a change that reaches a few examples of a batch (an embedding row's, through its
  gather: the sequences whose tokens use the row, at most `Slab.examples` of them), computed
  on those examples alone by every operation that keeps the examples apart;
- a plain array: any other perturbed value (what every operation without a rule receives).

Operations whose operands are all unperturbed compute the same value for every perturbation,
so `vmap` leaves them unbatched.

Whether following a leaf's changes pays (`decision`) is read from the jaxprs of both ways of
evaluating a moved entry: the cost of what depends on the point (multiply-adds of products
and convolutions, elements touched otherwise), times the leaf's points, plus compiling the
program (its equations). A change that spreads over everything downstream (a table whose
gather feeds a norm over the features, a leaf normalised as a whole) costs as much per point
as the direct evaluation, and its larger program more to compile.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _jaxpr
from . import spanned_changes, unread_entries
from .spanned_changes import Changed, Spanned, Structured

lax = jax.lax

def _zero():
    # a constant, not an array created under the trace: no equation of its own in a point's
    # program (there are hundreds of such starts in a transformer block's)
    return np.int32(0)


# Every start and index here is a coordinate inside its value, never negative: without JAX's
# wrapping of negative starts (a compare, an add and a select per axis) and of out-of-range
# flat indices, a point's program is a third smaller, to trace and to compile.
_slice = functools.partial(lax.dynamic_slice, allow_negative_indices=False)
_update_slice = functools.partial(lax.dynamic_update_slice, allow_negative_indices=False)
_slice_in_dim = functools.partial(lax.dynamic_slice_in_dim, allow_negative_indices=False)
_update_slice_in_dim = functools.partial(lax.dynamic_update_slice_in_dim,
                                         allow_negative_indices=False)
_index_in_dim = functools.partial(lax.dynamic_index_in_dim, allow_negative_indices=False)


def _put(target: Any, values: Any, at: Sequence[Any]) -> Any:
    """`target` with `values` written at `at` (as `dynamic_update_slice`). Where `values` is
    one entry wide or whole on every axis, a select on the coordinates instead: batched over
    points, an update slice becomes a scatter into a copy of the batch, which XLA neither
    fuses nor vectorises; a select fuses with what reads it."""
    values = values.astype(target.dtype)
    shape, inner = np.shape(target), np.shape(values)
    if not all(k in (1, n) for k, n in zip(inner, shape)):
        return _update_slice(target, values, at)
    mask = None
    for d, (k, n) in enumerate(zip(inner, shape)):
        if k == 1 and n > 1:
            here = lax.broadcasted_iota(np.int32, tuple(n if e == d else 1
                                                        for e in range(len(shape))), d) == at[d]
            mask = here if mask is None else mask & here
    return values if mask is None else jnp.where(mask, values, target)


def _unravel(flat, shape: tuple[int, ...]) -> tuple:
    """The coordinates of flat index `flat` (in range) in `shape`, row-major."""
    flat = jnp.asarray(flat, np.int32)
    coords = []
    for k in reversed(shape):
        coords.append(lax.rem(flat, np.int32(k)))
        flat = lax.div(flat, np.int32(k))
    return tuple(reversed(coords))


def _ravel(coords: Sequence[Any], shape: tuple[int, ...]) -> Any:
    """The row-major flat index of `coords` (each in range) in `shape`."""
    flat = jnp.zeros((), np.int32)
    for c, k in zip(coords, shape):
        flat = flat * np.int32(k) + jnp.asarray(c, np.int32)
    return flat


@dataclasses.dataclass(frozen=True, eq=False)
class Slab:
    """A value equal to `base` except on a slab, where it is `values`.

    `fixed[d]` is the coordinate where the slab starts on axis d (a traced scalar), or None for
    the whole axis; `values` has base's shape with the fixed axes of size 1, or, on an axis
    that merged a fixed coordinate with whole axes after it (a convolution's output channel
    flattened with its pixels, an attention head's features merged back), of the block's
    length (`is_block`). Only products and elementwise operations keep a block; every other
    operation takes its operand dense.
    """

    base: Any
    fixed: tuple
    values: Any
    # K > 0: the leaf itself, an embedding table whose changed row reaches at most K of the
    # batch's examples through its gather (`_gather_examples`)
    examples: int = 0

    def starts(self) -> list:
        return [_zero() if f is None else f for f in self.fixed]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(k) for k in np.shape(self.values))

    @property
    def is_block(self) -> bool:
        return any(f is not None and k != 1 for f, k in zip(self.fixed, self.shape))

    def part(self, x: Any) -> Any:
        """The slab of an array shaped like `base`."""
        return _slice(x, self.starts(), self.shape)

    def dense(self) -> Any:
        return _put(self.base, self.values, self.starts())

    def change(self) -> Any:
        return self.values - self.part(self.base)


@dataclasses.dataclass(eq=False)
class Products:
    """The products θ·x of a leaf's uses, in the order the interpreter meets them: formed
    and kept (`seen`) where none are `given`, else taken from `given`. A leaf's products at
    θ are the same for every direction and step: a program that evaluates a few directions
    per call (fast mode's search) takes them as inputs instead of forming them again."""

    given: Sequence[Any] | None = None
    seen: list = dataclasses.field(default_factory=list)

    def at_theta(self, form: Callable[[], Any]) -> Any:
        out = form() if self.given is None else self.given[len(self.seen)]
        self.seen.append(out)
        return out


@dataclasses.dataclass(eq=False)
class Direction:
    """The leaf (or a view of it) moved by t·u; `record` notes a use of θ + t·u itself.

    With a `window` (a traced row number), u is zero outside rows [window, window + R) of the
    leading axis and `u` holds those R rows alone: a product that contracts that axis reads
    the R matching slices of its other operand (a search's last levels test a few rows of a
    wide layer: their products cost those rows, not the layer)."""

    base: Any
    u: Any
    t: Any
    record: list   # shared by the views of one leaf: [True] once θ + t·u was formed
    products: Products   # shared by the views of one leaf too
    window: Any = None

    def full_u(self) -> Any:
        """u on the whole leaf: the window's rows in zeros."""
        if self.window is None:
            return self.u
        return _update_slice_in_dim(jnp.zeros_like(self.base), self.u, self.window, 0)

    def dense(self) -> Any:
        self.record[0] = True
        return self.base + jnp.asarray(self.t, self.base.dtype) * self.full_u()


@dataclasses.dataclass(frozen=True, eq=False)
class Subset:
    """A value equal to `base` except in a few examples of a batch: coordinates `at` (K,
    distinct) of axis `axis`, where it is `inner` (K long on that axis, the other axes
    whole). The change reaches the examples where `reached` is True; the others fill K, and
    their values are `base`'s whatever `inner` holds there. Every operation that keeps the
    examples apart (elementwise, broadcasts, reshapes and transposes that keep the axis,
    reductions and products over other axes) computes on those K examples alone."""

    base: Any     # unperturbed, or itself changed (a tied output layer's column: a `Slab`)
    axis: int
    at: Any
    reached: Any
    inner: Any

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(_whole(self.base).shape)

    def part(self, x: Any, axis: int | None = None) -> Any:
        """x's examples at `at`, along `axis` (this value's own by default)."""
        return jnp.take(x, self.at, axis=self.axis if axis is None else axis)

    def _reached(self) -> Any:
        shape = [1] * self.inner.ndim
        shape[self.axis] = -1
        return self.reached.reshape(shape)

    def change(self) -> Any:
        """inner − base on the K examples, 0 on those the change does not reach."""
        delta = self.inner - self.part(_dense(self.base)).astype(self.inner.dtype)
        return jnp.where(self._reached(), delta, jnp.zeros((), delta.dtype))

    def dense(self) -> Any:
        base = _dense(self.base)
        values = jnp.where(self._reached(), self.inner.astype(base.dtype), self.part(base))
        moved = jnp.moveaxis(base, self.axis, 0).at[self.at].set(
            jnp.moveaxis(values, self.axis, 0))
        return jnp.moveaxis(moved, 0, self.axis)


def _whole(x: Any) -> Any:
    """The array a perturbed value is shaped like (its unperturbed value)."""
    return x.base if isinstance(x, Change) else x


Change = (Slab, Direction, Subset, *Structured)


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
                _slice(base_out, starts, change_out.shape) + change_out)


def _elementwise(eqn, args, changed):
    """Elementwise op: the output's slab is where every changed operand has its slab.

    Operands may be broadcast along axes of size 1 (jaxprs allow it); a change broadcast
    along an axis spreads over it, so that axis is whole in the output's slab, and so is an
    axis where the changed operands sit at different coordinates (their slabs widened).
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
            fixed.append(None)
        else:
            fixed.append(coords[0])
    if all(f is None for f in fixed):
        return None  # the change covers the output: evaluate densely

    # the slab's length on each fixed axis (1, or a block's)
    extent = [next((a.shape[d] for a, c in zip(args, changed) if c and not spread(a.base, d)
                    and a.fixed[d] is f), 1) if f is not None else n
              for d, (f, n) in enumerate(zip(fixed, out_shape))]

    def on_slab(a, c):
        if c:
            grow = [d for d, f in enumerate(a.fixed)
                    if f is not None and fixed[d] is None and not spread(a.base, d)]
            return _widened(a, grow)[1] if grow else a.values
        if not np.ndim(a):
            return a
        starts = [_zero() if f is None or spread(a, d) else f for d, f in enumerate(fixed)]
        sizes = [1 if spread(a, d) else k for d, k in enumerate(extent)]
        return _slice(a, starts, sizes)

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
    """A sum keeps the slab on the axes it does not sum; a sum over all of them (a norm's
    mean over the features) keeps the unperturbed sum beside the changed one."""
    axes = eqn.params["axes"]
    base_out = _bind(eqn, [slab.base])
    fixed = [f for d, f in enumerate(slab.fixed) if d not in axes]
    out = _slab_or_dense(base_out, fixed, _bind(eqn, [slab.change()]))
    return out if isinstance(out, Slab) else Changed(base_out, out)


def _transpose(eqn, slab: Slab):
    perm = eqn.params["permutation"]
    return Slab(_bind(eqn, [slab.base]), tuple(slab.fixed[p] for p in perm),
                _bind(eqn, [slab.values]))


def _reshape_blocks(old: Sequence[int], new: Sequence[int]) -> list | None:
    """The axes of `old` and `new` in blocks of equal size (a reshape splits or merges
    within a block, never across), or None."""
    blocks, i, j = [], 0, 0
    while i < len(old) or j < len(new):
        olds, news, po, pn = [], [], 1, 1
        if i < len(old):
            olds.append(i)
            po, i = po * old[i], i + 1
        if j < len(new):
            news.append(j)
            pn, j = pn * new[j], j + 1
        while po != pn:
            if po < pn and i < len(old):
                olds.append(i)
                po, i = po * old[i], i + 1
            elif pn < po and j < len(new):
                news.append(j)
                pn, j = pn * new[j], j + 1
            else:
                return None
        blocks.append((olds, news))
    return blocks


def _reshape(eqn, slab: Slab):
    """A reshape keeps a slab when each block of axes it splits or merges is either whole
    (rows of an attention head's features) or fixed (an entry's coordinates, recomputed); one
    that merges fixed axes with whole axes after them into one axis (a channel with its
    pixels, a head with its features) keeps the range they cover there (a block)."""
    old, new = slab.base.shape, tuple(eqn.params["new_sizes"])
    blocks = _reshape_blocks(old, new) if eqn.params.get("dimensions") is None else None
    if blocks is None or slab.is_block:
        return None
    fixed: list = [None] * len(new)
    extent = list(new)
    for olds, news in blocks:
        olds = [d for d in olds if old[d] != 1]   # size-1 axes: coordinate 0 either way
        news = [d for d in news if new[d] != 1]
        coords = [slab.fixed[d] for d in olds]
        if all(c is None for c in coords):
            continue
        if any(c is None for c in coords):
            whole = coords.index(None)
            if len(news) != 1 or any(c is not None for c in coords[whole:]):
                return None  # a range that is not one block of one axis
            # the fixed leading coordinates, then the whole axes: one range of the new axis
            start = jnp.ravel_multi_index(tuple(coords[:whole]) + (0,) * (len(olds) - whole),
                                          tuple(old[d] for d in olds), mode="clip")
            fixed[news[0]] = jnp.asarray(start, np.int32)
            extent[news[0]] = int(np.prod([old[d] for d in olds[whole:]], dtype=np.int64))
            continue
        if len(olds) == 1 and len(news) == 1:
            fixed[news[0]] = coords[0]   # the same coordinate (kept identical for `_elementwise`)
            extent[news[0]] = 1
            continue
        flat = _ravel(tuple(coords), tuple(old[d] for d in olds))
        for d, c in zip(news, _unravel(flat, tuple(new[d] for d in news))):
            fixed[d] = jnp.asarray(c, np.int32)
            extent[d] = 1
    shape = tuple(k if f is not None else n for f, n, k in zip(fixed, new, extent))
    return Slab(_bind(eqn, [slab.base]), tuple(fixed), slab.values.reshape(shape))


def _squeeze(eqn, slab: Slab):
    dims = eqn.params["dimensions"]
    return Slab(_bind(eqn, [slab.base]),
                tuple(f for d, f in enumerate(slab.fixed) if d not in dims),
                _bind(eqn, [slab.values]))


def _widened(slab: Slab, axes: Sequence[int]) -> tuple[list, Any]:
    """The slab grown to the whole extent of `axes`: (its fixed coordinates, its values)."""
    fixed = [None if d in axes else f for d, f in enumerate(slab.fixed)]
    starts = [_zero() if f is None else f for f in fixed]
    sizes = [k if f is not None else n for f, n, k in zip(fixed, slab.base.shape, slab.shape)]
    region = _slice(slab.base, starts, sizes)
    at = [f if d in axes and f is not None else _zero() for d, f in enumerate(slab.fixed)]
    return fixed, _put(region, slab.values, at)


def _along_axes(eqn, slab: Slab, axes: Sequence[int], kept: Callable[[list], list],
                **overrides):
    """An operation that mixes values along `axes` only (a reduction, a pooling window, a
    cumulative sum): applied to the slab widened along them; None if nothing stays fixed."""
    fixed, values = _widened(slab, axes)
    out_fixed = kept(fixed)
    if all(f is None for f in out_fixed):
        return None
    return Slab(_bind(eqn, [slab.base]), tuple(out_fixed), _bind(eqn, [values], **overrides))


def _reduction(eqn, slab: Slab):
    """Max, min, product, argmax... over `axes`: a row's change stays in its row."""
    axes = eqn.params["axes"]
    return _along_axes(eqn, slab, axes,
                       lambda fixed: [f for d, f in enumerate(fixed) if d not in axes])


def _cumulative(eqn, slab: Slab):
    axis = eqn.params["axis"]
    return _along_axes(eqn, slab, (axis,), lambda fixed: fixed)


def _window_reduction(eqn, slab: Slab):
    """Pooling: an axis of window 1 (stride 1, no padding or dilation) keeps its coordinate."""
    p = eqn.params
    trivial = [p["window_dimensions"][d] == 1 and p["window_strides"][d] == 1
               and tuple(p["padding"][d]) == (0, 0) and p["base_dilation"][d] == 1
               and p["window_dilation"][d] == 1 for d in range(len(slab.fixed))]
    axes = [d for d, t in enumerate(trivial) if not t]
    return _along_axes(eqn, slab, axes, lambda fixed: fixed)


def _gather(eqn, slab: Slab, indices):
    """A gather from a changed operand (an embedding table, `take_along_axis`).

    The axes it indexes are widened (which tokens use the changed row is data); a fixed axis
    taken whole (an embedding's feature) or a batching axis keeps its coordinate, so a table
    entry changes one feature of the tokens that use its row.
    """
    dn, sizes = eqn.params["dimension_numbers"], list(eqn.params["slice_sizes"])
    shape, out_ndim = slab.base.shape, len(eqn.outvars[0].aval.shape)
    indexed = set(dn.start_index_map) | set(dn.collapsed_slice_dims)
    offset_axes = [d for d in range(len(shape))
                   if d not in dn.collapsed_slice_dims and d not in dn.operand_batching_dims]
    batch_out = [d for d in range(out_ndim) if d not in dn.offset_dims]
    widen = [d for d, f in enumerate(slab.fixed) if f is not None and
             (d in indexed or (d not in dn.operand_batching_dims and sizes[d] != shape[d]))]
    fixed, values = _widened(slab, widen)
    out_fixed: list = [None] * out_ndim
    idx_starts, idx_sizes = [_zero()] * indices.ndim, list(indices.shape)
    for d, f in enumerate(fixed):
        if f is None:
            continue
        if d in dn.operand_batching_dims:
            k = dn.start_indices_batching_dims[list(dn.operand_batching_dims).index(d)]
            out_fixed[batch_out[k]] = f
            idx_starts[k], idx_sizes[k] = f, 1
        else:
            out_fixed[dn.offset_dims[offset_axes.index(d)]] = f
            sizes[d] = 1
    if all(f is None for f in out_fixed):
        return None
    part = _slice(indices, idx_starts, idx_sizes)
    return Slab(_bind(eqn, [slab.base, indices]), tuple(out_fixed),
                _bind(eqn, [values, part], slice_sizes=tuple(sizes)))


def _dynamic_slice(eqn, slab: Slab, starts):
    """A window of a changed operand: the slab's coordinates moved into the window (the
    change falls outside it where they leave it)."""
    sizes, shape = eqn.params["slice_sizes"], slab.base.shape
    base_out = _bind(eqn, [slab.base, *starts])
    # dynamic_slice clamps its starts so that the window fits
    clamped = [jnp.clip(jnp.asarray(s, np.int32), 0, n - k)
               for s, n, k in zip(starts, shape, sizes)]
    fixed, inside = [], jnp.asarray(True)
    for f, s, k in zip(slab.fixed, clamped, sizes):
        if f is None:
            fixed.append(None)
            continue
        at = f - s
        inside = inside & (at >= 0) & (at < k)
        fixed.append(jnp.clip(at, 0, k - 1).astype(np.int32))
    values = _slice(slab.values, [_zero() if f is not None else s
                                  for f, s in zip(slab.fixed, clamped)],
                    [1 if f is not None else k for f, k in zip(slab.fixed, sizes)])
    out = Slab(base_out, tuple(fixed), values)
    return Slab(base_out, out.fixed, jnp.where(inside, values, out.part(base_out)))


def _scatter_add_into(eqn, slab: Slab, rest):
    """Adding into a changed operand: the change stays where it was."""
    base_out = _bind(eqn, [slab.base, *rest])
    return Slab(base_out, slab.fixed, slab.part(base_out) + slab.change())


def _conv_entry(eqn, slab: Slab, lhs):
    """The change of a convolution's output when one kernel entry (o, i, offsets) moves by δ:
    δ times the input feature the entry reads, padded and dilated as the convolution pads
    and dilates it, at the entry's offsets and the convolution's strides. A window of the
    input per point, no convolution."""
    p = eqn.params
    dn, groups = p["dimension_numbers"], p["feature_group_count"]
    o_ax, i_ax, spatial = dn.rhs_spec[0], dn.rhs_spec[1], dn.rhs_spec[2:]
    o, i = slab.fixed[o_ax], slab.fixed[i_ax]
    out_shape = eqn.outvars[0].aval.shape
    per_group = slab.base.shape[o_ax] // groups
    channel = i + (o // per_group) * slab.base.shape[i_ax] if groups != 1 else i
    # the input in (batch, feature, spatial...) order, padded (interior: lhs dilation)
    x = jnp.transpose(lhs, dn.lhs_spec)
    pads = [(0, 0, 0), (0, 0, 0)] + [(lo, hi, d - 1) for (lo, hi), d in
                                     zip(p["padding"], p["lhs_dilation"])]
    x = lax.pad(x, jnp.zeros((), x.dtype), pads)
    starts, sizes = [_zero(), channel], [x.shape[0], 1]
    for k, ax in enumerate(spatial):
        n_out = out_shape[dn.out_spec[2 + k]]
        starts.append(slab.fixed[ax] * p["rhs_dilation"][k])
        sizes.append((n_out - 1) * p["window_strides"][k] + 1)
    window = _slice(x, starts, sizes)
    window = lax.slice(window, [0] * window.ndim, window.shape,
                       (1, 1, *p["window_strides"]))
    change = slab.change().reshape(()).astype(window.dtype) * window
    change = jnp.transpose(change, tuple(int(a) for a in np.argsort(dn.out_spec)))
    out_fixed = [None] * len(out_shape)
    out_fixed[dn.out_spec[1]] = o
    return out_fixed, change


def _conv_kernel(eqn, slab: Slab, lhs):
    """A convolution with a changed kernel: an entry changes one output feature."""
    p = eqn.params
    dn, groups = p["dimension_numbers"], p["feature_group_count"]
    if p["batch_group_count"] != 1:
        return None
    base_out = _bind(eqn, [lhs, slab.base])
    if all(slab.fixed[d] is not None for d in dn.rhs_spec):
        out_fixed, change_out = _conv_entry(eqn, slab, lhs)
        return _slab_or_dense(base_out, out_fixed, change_out)
    if groups != 1:
        return None
    # the change as a kernel of whole extent but on the fixed output feature, against the
    # whole input (only the kernel varies per point: one convolution for a batch)
    change = _zeros_around(slab, [d for d in dn.rhs_spec[1:] if slab.fixed[d] is not None])
    change_out = _bind(eqn, [lhs, change])
    out_fixed = [None] * change_out.ndim
    out_fixed[dn.out_spec[1]] = slab.fixed[dn.rhs_spec[0]]
    return _slab_or_dense(base_out, out_fixed, change_out)


def _conv_input(eqn, slab: Slab, rhs):
    """A convolution of a changed input changes the output of the batch elements it sits in.

    A change on one input feature (a channel of the previous layer): the change's patches
    (the windows each output reads) times the kernel's slice for that feature, a product per
    point rather than a convolution whose kernel differs per point (slow on CPUs).
    """
    p = eqn.params
    dn, groups = p["dimension_numbers"], p["feature_group_count"]
    if p["batch_group_count"] != 1:
        return None
    c = slab.fixed[dn.lhs_spec[1]]
    change = _zeros_around(slab, [d for d in dn.lhs_spec[2:] if slab.fixed[d] is not None])
    out_fixed = [None] * len(eqn.outvars[0].aval.shape)
    out_fixed[dn.out_spec[0]] = slab.fixed[dn.lhs_spec[0]]
    base_out = _bind(eqn, [slab.base, rhs])
    if c is None:
        return _slab_or_dense(base_out, out_fixed, _bind(eqn, [change, rhs]))
    kernel = jnp.transpose(rhs, dn.rhs_spec)   # (out feature, in feature, spatial...)
    n_out, per_group = kernel.shape[0] // groups, kernel.shape[1]
    group = c // (slab.base.shape[dn.lhs_spec[1]] // groups)
    kernel = _slice_in_dim(kernel, group * n_out, n_out, 0)
    kernel = _index_in_dim(kernel, c % per_group, 1, keepdims=False)
    patches = lax.conv_general_dilated_patches(
        change, kernel.shape[1:], p["window_strides"], p["padding"], p["lhs_dilation"],
        p["rhs_dilation"], dn)
    f_ax = dn.out_spec[1]
    change_out = jnp.moveaxis(
        jnp.moveaxis(patches, f_ax, -1) @ kernel.reshape(n_out, -1).T.astype(patches.dtype),
        -1, f_ax)
    if groups == 1:
        return _slab_or_dense(base_out, out_fixed, change_out)
    if n_out == 1:   # depthwise: the output feature of the group
        out_fixed[f_ax] = group
        return _slab_or_dense(base_out, out_fixed, change_out)
    full = [n if d == f_ax else k for d, (n, k) in enumerate(zip(base_out.shape,
                                                               change_out.shape))]
    at = [group * n_out if d == f_ax else _zero() for d in range(len(full))]
    grown = _update_slice(jnp.zeros(full, change_out.dtype), change_out, at)
    return _slab_or_dense(base_out, out_fixed, grown)


def _zeros_around(slab: Slab, axes: Sequence[int]) -> Any:
    """The slab's change grown to the whole extent of `axes`, zero outside the slab."""
    shape = [n if d in axes else k for d, (n, k) in enumerate(zip(slab.base.shape, slab.shape))]
    at = [f if d in axes else _zero() for d, f in enumerate(slab.fixed)]
    return _put(jnp.zeros(shape, slab.base.dtype), slab.change(), at)


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
        sizes.append(size if match is None or at is None else slab.shape[match])
    other_part = _slice(other, starts, sizes)
    base_out = _bind(eqn, (slab.base, other) if side == 0 else (other, slab.base))
    if (side == 0 and not s_batch and tuple(s_contract) == (slab.base.ndim - 1,)
            and other.ndim == 2 and _columns(slab)):
        # a few columns of the rows times the matching rows of a matrix: a change in a few
        # directions of the output's features (`spanned_changes`), left unformed
        coef = slab.change().reshape(slab.base.shape[:-1] + slab.shape[-1:])
        return Spanned(base_out, (), coef, other_part.astype(coef.dtype))
    operands = (slab.change(), other_part) if side == 0 else (other_part, slab.change())
    change_out = _bind(eqn, operands)
    s_free = [d for d in range(len(slab.fixed)) if d not in s_contract and d not in s_batch]
    o_free = [None] * (other.ndim - len(o_contract) - len(o_batch))
    fixed = [slab.fixed[d] for d in s_batch] + (
        [slab.fixed[d] for d in s_free] + o_free if side == 0
        else o_free + [slab.fixed[d] for d in s_free])
    return _slab_or_dense(base_out, fixed, change_out)


def _columns(slab: Slab) -> bool:
    """Whether the slab is a few columns: fixed on the last axis only, with rows before it."""
    return (slab.base.ndim >= 2 and slab.fixed[-1] is not None
            and all(f is None for f in slab.fixed[:-1]))


def _spanned(slab: Slab) -> Any:
    """A slab of columns as a `Spanned` change (its columns' coefficients times unit vectors),
    any other slab as a `Changed` value."""
    if not _columns(slab):
        return Changed(slab.base, slab.dense())
    ext, features = slab.shape[-1], slab.base.shape[-1]
    coef = slab.change().reshape(slab.base.shape[:-1] + (ext,))
    units = _update_slice(jnp.zeros((ext, features), coef.dtype),
                          jnp.eye(ext, dtype=coef.dtype), (_zero(), slab.fixed[-1]))
    return Spanned(slab.base, (), coef, units)


def _structured_elementwise(eqn, args, changed):
    """An elementwise operation where a changed operand has a structured form
    (`spanned_changes`); its slabs joined to it as those forms."""
    forms = [_spanned(a) if c and isinstance(a, Slab) else a for a, c in zip(args, changed)]
    bases = [f.base if c else f for f, c in zip(forms, changed)]
    return spanned_changes.elementwise(eqn, forms, changed, bases)


def _slab_times_changed(eqn, args):
    """A slab times a value changed everywhere (a tied embedding's output product after the
    layers): the value times the unperturbed operand is one product for the batch's points,
    not a product per point with its own operand; plus the slab's part."""
    for side in (0, 1):
        other = args[1 - side]
        if isinstance(args[side], Slab) and not isinstance(other, (Slab, Direction)):
            return _slab_product(eqn, args[side], side, _dense(other))
    return None


def _slabs_product(eqn, a: Slab, b: Slab):
    """A product of two changed operands whose changes sit on the same batch coordinates
    (one attention head, one sequence): the product of the slabs, on those coordinates."""
    _, (lb, rb) = eqn.params["dimension_numbers"]
    if a.is_block or b.is_block:
        return None
    # each slab grown to the whole of its axes other than the batch's (a query row and a key
    # row of one sequence: that sequence's queries and keys)
    a, b = (_batch_slab(x, batch) for x, batch in ((a, lb), (b, rb)))
    fixed = [a.fixed[d] for d in lb]
    if any(x is not b.fixed[d] for x, d in zip(fixed, rb)) or all(f is None for f in fixed):
        return None
    base_out = _bind(eqn, [a.base, b.base])
    fixed = fixed + [None] * (base_out.ndim - len(fixed))
    return Slab(base_out, tuple(fixed), _bind(eqn, [a.values, b.values]))


def _batch_slab(slab: Slab, batch: Sequence[int]) -> Slab:
    """The slab grown to the whole extent of every axis not in `batch`."""
    wide = [d for d, f in enumerate(slab.fixed) if f is not None and d not in batch]
    if not wide:
        return slab
    fixed, values = _widened(slab, wide)
    return Slab(slab.base, tuple(fixed), values)


# ------------------------------------------------------------------ rules for directions


def _direction_view(eqn, x: Direction):
    kind = _jaxpr.name(eqn)
    if kind == _jaxpr.CONVERT and eqn.params["new_dtype"] == x.base.dtype:
        return dataclasses.replace(x, base=_bind(eqn, [x.base]), u=_bind(eqn, [x.u]))
    if kind in (_jaxpr.TRANSPOSE, _jaxpr.RESHAPE, _jaxpr.SQUEEZE):
        # (a view of a windowed u takes u whole: its rows could land on any axis)
        return Direction(_bind(eqn, [x.base]), _bind(eqn, [x.full_u()]), x.t, x.record,
                         x.products)
    return None


def _window_product(eqn, x: Direction, side: int, other) -> Any:
    """The product with a windowed u, on the whole output: where the leaf's leading axis is
    contracted or a batch axis, the other operand's matching rows alone; where it is free,
    the window's rows of the output, placed in zeros."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    s_contract, o_contract = (lc, rc) if side == 0 else (rc, lc)
    s_batch, o_batch = (lb, rb) if side == 0 else (rb, lb)
    rows = x.u.shape[0]
    matched = (o_contract[list(s_contract).index(0)] if 0 in s_contract else
               o_batch[list(s_batch).index(0)] if 0 in s_batch else None)
    if matched is not None:
        other = _slice_in_dim(other, x.window, rows, matched)
    change = _bind(eqn, (x.u, other) if side == 0 else (other, x.u))
    if 0 in s_contract:
        return change
    if 0 in s_batch:
        axis = list(s_batch).index(0)
    else:
        o_free = other.ndim - len(o_contract) - len(o_batch)
        s_free = [d for d in range(x.u.ndim) if d not in s_contract and d not in s_batch]
        axis = len(s_batch) + (0 if side == 0 else o_free) + s_free.index(0)
    shape = list(change.shape)
    shape[axis] = x.base.shape[0]
    return _update_slice_in_dim(jnp.zeros(shape, change.dtype), change, x.window, axis)


def _direction_product(eqn, x: Direction, side: int, other):
    pair = lambda a: (a, other) if side == 0 else (other, a)  # noqa: E731
    base_out = x.products.at_theta(lambda: _bind(eqn, pair(x.base)))
    change = (_bind(eqn, pair(x.u)) if x.window is None
              else _window_product(eqn, x, side, other))
    return base_out + jnp.asarray(x.t, base_out.dtype) * change


# ------------------------------------------------------------------ rules for a few examples


def _gather_examples(eqn, slab: Slab, indices) -> Any:
    """A gather of whole rows (`unread_entries.example_rows`) from the table changed in one
    row, whose change reaches at most `slab.examples` examples (the indices' leading axis):
    those examples, found from the indices here (the ones that use the row first, then
    others to fill K), gathered alone, as a `Subset` of the output's first batch axis."""
    position = unread_entries.example_rows(eqn)
    row = slab.fixed[0]
    if position is None or row is None:
        return None
    rows = slab.base.shape[0]
    used = jnp.clip(indices[..., position], 0, rows - 1) == row
    reached = jnp.any(used.reshape(used.shape[0], -1), axis=1)
    at = jnp.argsort(~reached, stable=True)[:slab.examples].astype(np.int32)
    part = jnp.take(indices, at, axis=0)
    plain = Slab(slab.base, slab.fixed, slab.values)
    inner = _gather(eqn, plain, part)
    inner = _bind(eqn, [plain.dense(), part]) if inner is None else _dense(inner)
    dn = eqn.params["dimension_numbers"]
    axis = next(d for d in range(inner.ndim) if d not in dn.offset_dims)
    return Subset(_bind(eqn, [slab.base, indices]), axis, at, reached[at], inner)


def _subset_axis_out(eqn, kind: str, x: Subset) -> int | None:
    """Where the examples' axis of operand `x` lands in the output of a single-operand
    `eqn` that keeps the examples apart, or None (the operation mixes them)."""
    a, params = x.axis, eqn.params
    if kind == _jaxpr.TRANSPOSE:
        return list(params["permutation"]).index(a)
    if kind == _jaxpr.BROADCAST:
        e = params["broadcast_dimensions"][a]
        return e if params["shape"][e] == x.shape[a] else None
    if kind == _jaxpr.SQUEEZE:
        return a - sum(d < a for d in params["dimensions"])
    if kind == _jaxpr.REDUCE_SUM or kind in _jaxpr.REDUCTIONS:
        axes = params["axes"]
        return None if a in axes else a - sum(d < a for d in axes)
    if kind == _jaxpr.RESHAPE and params.get("dimensions") is None:
        old, new = x.shape, tuple(params["new_sizes"])
        for olds, news in _reshape_blocks(old, new) or []:
            if a in olds:
                olds = [d for d in olds if old[d] != 1]
                news = [d for d in news if new[d] != 1]
                ok = olds == [a] and len(news) == 1 and new[news[0]] == old[a]
                return news[0] if ok else None
    return None


def _subset_product(eqn, args) -> Any:
    """A product keeping the examples apart: their axis a batch axis of both operands (the
    other's examples taken at `at`, or its own `Subset` there) or a free axis of one."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    x, y = args
    if isinstance(x, Subset) and isinstance(y, Subset):
        if x.at is not y.at or x.axis not in lb or y.axis not in rb \
                or list(lb).index(x.axis) != list(rb).index(y.axis):
            return None
        return Subset(_subset_base(eqn, [x.base, y.base]), list(lb).index(x.axis), x.at,
                      x.reached, _bind(eqn, [x.inner, y.inner]))
    side = 0 if isinstance(x, Subset) else 1
    sub, other = args[side], args[1 - side]
    if isinstance(other, Slab):
        return _subset_times_slab(eqn, sub, side, other)
    s_contract, s_batch, o_batch = (lc, lb, rb) if side == 0 else (rc, rb, lb)
    a = sub.axis
    if a in s_contract:
        return None
    if a in s_batch:
        k = list(s_batch).index(a)
        other_part, axis = sub.part(other, o_batch[k]), k
    else:
        other_part, axis = other, _free_axis_out(eqn, sub, side)
    pair = (lambda p, q: (p, q)) if side == 0 else (lambda p, q: (q, p))
    return Subset(_subset_base(eqn, list(pair(sub.base, other))), axis, sub.at, sub.reached,
                  _bind(eqn, pair(sub.inner, other_part)))


def _free_axis_out(eqn, sub: Subset, side: int) -> int:
    """Where a product puts the examples' axis, a free axis of operand `side`."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    s_contract, s_batch = (lc, lb) if side == 0 else (rc, rb)
    o_contract, o_batch = (rc, rb) if side == 0 else (lc, lb)
    other_ndim = len(eqn.invars[1 - side].aval.shape)
    s_free = [d for d in range(len(sub.shape)) if d not in s_contract and d not in s_batch]
    o_free = other_ndim - len(o_contract) - len(o_batch)
    return len(s_batch) + (0 if side == 0 else o_free) + s_free.index(sub.axis)


def _subset_times_slab(eqn, sub: Subset, side: int, slab: Slab) -> Any:
    """A few examples' values times an operand changed on a slab (a tied output layer):
    the unperturbed examples times the slab everywhere (one column of the product changed),
    and the K examples' own values times it; the examples' axis free in `sub`."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    if isinstance(sub.base, Change) or slab.is_block or sub.axis in (lc if side == 0 else rc) \
            or sub.axis in (lb if side == 0 else rb):
        return None
    everywhere = _slab_product(eqn, slab, 1 - side, sub.base)
    inner = _dense(_slab_product(eqn, slab, 1 - side, sub.inner))
    return Subset(everywhere, _free_axis_out(eqn, sub, side), sub.at, sub.reached, inner)


def _subset_base(eqn, bases: list) -> Any:
    """The output's value outside the examples: unperturbed, or by the rules of a changed
    base (a `Slab`), else dense."""
    changed = [isinstance(b, Change) for b in bases]
    if not any(changed):
        return _bind(eqn, bases)
    out = _apply(eqn, bases, changed, changed)
    return out if out is not None else _bind(eqn, [_dense(b) for b in bases])


def _apply_subset(eqn, kind, args, touched_inputs) -> Any:
    """Rules for `Subset` operands (all of one `at`, every other operand unperturbed); None:
    the operation mixes the examples or meets another change (the subsets then go dense)."""
    subsets = [a for a in args if isinstance(a, Subset)]
    others = [t and not isinstance(a, Subset) for a, t in zip(args, touched_inputs)]
    if any(x.at is not subsets[0].at for x in subsets):
        return None
    first = subsets[0]
    if kind == _jaxpr.DOT:   # the other operand unperturbed, a `Subset` or a `Slab`
        if any(o and not isinstance(a, Slab) for a, o in zip(args, others)):
            return None
        return _subset_product(eqn, args)
    if any(others):
        return None
    if kind in _jaxpr.ELEMENTWISE:
        a = first.axis
        if any(x.axis != a for x in subsets):
            return None
        examples = first.shape[a]

        def restricted(x):
            if isinstance(x, Subset):
                return x.inner
            if np.ndim(x) == 0 or np.shape(x)[a] != examples:
                return x   # broadcast along the examples
            return first.part(x)
        bases = [x.base if isinstance(x, Subset) else x for x in args]
        return Subset(_subset_base(eqn, bases), a, first.at, first.reached,
                      _bind(eqn, [restricted(x) for x in args]))
    if len(args) != 1:
        return None
    base_out = _subset_base(eqn, [first.base])
    if kind == _jaxpr.REDUCE_SUM and first.axis in eqn.params["axes"]:
        # a sum over the examples (the loss's mean): the sum outside them plus their changes
        base_out = _dense(base_out)
        return base_out + _bind(eqn, [first.change()]).astype(base_out.dtype)
    axis = _subset_axis_out(eqn, kind, first)
    if axis is None:
        return None
    if kind == _jaxpr.BROADCAST:
        shape = list(eqn.params["shape"])
        shape[axis] = first.inner.shape[first.axis]
        inner = _bind(eqn, [first.inner], shape=tuple(shape), sharding=None)
    elif kind == _jaxpr.RESHAPE:
        shape = list(eqn.params["new_sizes"])
        shape[axis] = first.inner.shape[first.axis]
        inner = first.inner.reshape(shape)
    else:
        inner = _bind(eqn, [first.inner])
    return Subset(base_out, axis, first.at, first.reached, inner)


# ------------------------------------------------------------------ the interpreter


_SINGLE_SLAB_RULES: dict[str, Callable[..., Any]] = {
    _jaxpr.BROADCAST: _broadcast, _jaxpr.REDUCE_SUM: _reduce_sum, _jaxpr.TRANSPOSE: _transpose,
    _jaxpr.RESHAPE: _reshape, _jaxpr.SQUEEZE: _squeeze,
    **dict.fromkeys(_jaxpr.REDUCTIONS, _reduction),
    **dict.fromkeys(_jaxpr.WINDOW_REDUCTIONS, _window_reduction),
    **dict.fromkeys(_jaxpr.CUMULATIVE, _cumulative),
}


def _apply(eqn, args, changed, touched_inputs):
    """The output of `eqn` by a rule for its changed operands, or None (no rule applies)."""
    kind = _jaxpr.name(eqn)
    if any(isinstance(a, Subset) for a in args):
        out = _apply_subset(eqn, kind, args, touched_inputs)
        if out is not None:
            return out
        # the examples go dense; another changed operand keeps its rules
        args = [a.dense() if isinstance(a, Subset) else a for a in args]
        changed = [isinstance(a, Change) for a in args]
        if not any(changed):
            return None
    if any(isinstance(a, Slab) and a.is_block for a in args) and not (
            kind in _jaxpr.ELEMENTWISE or kind == _jaxpr.DOT):
        return None   # a block's rules: products and elementwise operations only
    if any(isinstance(a, Structured) for a in args):
        return _apply_structured(eqn, kind, args, changed, touched_inputs)
    if kind == _jaxpr.DOT:
        for side in (0, 1):
            if changed[side] and not touched_inputs[1 - side]:
                x, other = args[side], args[1 - side]
                if isinstance(x, Slab):
                    return _slab_product(eqn, x, side, other)
                return _direction_product(eqn, x, side, other)
        if all(isinstance(a, Slab) for a in args):
            return _slabs_product(eqn, *args)
        return _slab_times_changed(eqn, args)
    single = args[0] if len(args) == 1 else None
    if isinstance(single, Direction):
        return _direction_view(eqn, single)
    if kind in _jaxpr.ELEMENTWISE and not any(t and not c for t, c in zip(touched_inputs, changed)):
        return _elementwise(eqn, args, changed)
    first, rest_touched = args[0], any(touched_inputs[1:])
    if kind == _jaxpr.CONV:
        if isinstance(args[1], Slab) and not touched_inputs[0]:
            return _conv_kernel(eqn, args[1], args[0])
        if isinstance(first, Slab) and not touched_inputs[1]:
            return _conv_input(eqn, first, args[1])
        return None
    if not isinstance(first, Slab) or rest_touched:
        return None
    if kind == _jaxpr.GATHER:
        found = _gather_examples(eqn, first, args[1]) if first.examples else None
        return found if found is not None else _gather(eqn, first, args[1])
    if kind == _jaxpr.DYNAMIC_SLICE:
        return _dynamic_slice(eqn, first, args[1:])
    if kind == _jaxpr.SCATTER_ADD:
        return _scatter_add_into(eqn, first, args[1:])
    rule = _SINGLE_SLAB_RULES.get(kind) if single is not None else None
    return rule(eqn, single) if rule else None


def _apply_structured(eqn, kind, args, changed, touched_inputs):
    """Rules for values in the forms of `spanned_changes` (beside slabs); None: dense."""
    if any(t and not c for t, c in zip(touched_inputs, changed)) or any(
            isinstance(a, Direction) for a in args):
        return None
    if kind in _jaxpr.ELEMENTWISE:
        return _structured_elementwise(eqn, args, changed)
    if kind == _jaxpr.DOT and changed[0] and not changed[1] \
            and isinstance(args[0], (Spanned, spanned_changes.RowScaled)):
        return spanned_changes.product(eqn, args[0], args[1])
    if kind == _jaxpr.DOT:
        return _slab_times_changed(eqn, args)
    if kind == _jaxpr.REDUCE_SUM:
        return spanned_changes.reduce_sum(eqn, args[0])
    if kind == _jaxpr.BROADCAST and isinstance(args[0], Changed):
        return spanned_changes.broadcast(eqn, args[0])
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
    per_point: float = 0.0  # what following a point's change costs (`decision`), where known

    def _loss(self, param_dynamic, arg_dynamic, leaf_value) -> Any:
        invals = list(param_dynamic) + list(arg_dynamic)
        invals[self.position] = leaf_value
        perturbed = [k == self.position for k in range(len(invals))]
        out, = _run(self.closed.jaxpr, self.closed.consts, invals, perturbed)
        return _dense(out)

    def at_entry(self, param_dynamic, arg_dynamic, index, value, examples: int = 0) -> Any:
        """The loss with flat entry `index` of the leaf set to `value`; `examples` > 0: the
        leaf is a table whose row of `index` reaches at most that many examples of the batch
        through its one gather of rows (`unread_entries.examples_reaching_rows`)."""
        base = param_dynamic[self.position]
        coords = _unravel(index, base.shape) if base.ndim else ()
        slab = Slab(base, tuple(jnp.asarray(c, np.int32) for c in coords),
                    jnp.asarray(value, base.dtype).reshape((1,) * base.ndim), examples)
        return self._loss(param_dynamic, arg_dynamic, slab)

    def along(self, param_dynamic, arg_dynamic, u, t,
              products: Sequence[Any] | None = None) -> tuple[Any, bool]:
        """The loss at θ + t·u (u flat), and whether it is the loss at that exact point;
        `products`: the leaf's products at θ (`products_at_theta`), where they were formed
        before.

        Exact when every use of the leaf is a product (formed as θ·x + t·(u·x)); otherwise
        some operation received θ + t·u rounded to the leaf's dtype.
        """
        base = param_dynamic[self.position]
        record = [False]
        leaf = Direction(base, u.reshape(base.shape), t, record, Products(products))
        return self._loss(param_dynamic, arg_dynamic, leaf), not record[0]

    def along_window(self, param_dynamic, arg_dynamic, u_rows, row, t,
                     products: Sequence[Any] | None = None) -> tuple[Any, bool]:
        """`along` for a u that is zero outside rows [row, row + R) of the leaf's leading
        axis; `u_rows`: those R rows (the leaf's shape but R on axis 0)."""
        base = param_dynamic[self.position]
        record = [False]
        leaf = Direction(base, u_rows, t, record, Products(products), window=row)
        return self._loss(param_dynamic, arg_dynamic, leaf), not record[0]

    def products_at_theta(self, param_dynamic, arg_dynamic) -> list[Any]:
        """The products θ·x of the leaf's uses, for `along`'s `products` (traced: XLA keeps
        them alone of the loss's evaluation)."""
        base = param_dynamic[self.position]
        products = Products()
        leaf = Direction(base, jnp.zeros_like(base), 0.0, [False], products)
        self._loss(param_dynamic, arg_dynamic, leaf)
        return products.seen


def loss_jaxpr(loss: Callable[..., Any], param_dynamic: Sequence[Any],
               arg_dynamic: Sequence[Any]) -> Any | None:
    """`loss(param_dynamic, arg_dynamic)` as a ClosedJaxpr over the dynamic leaves (one input
    per leaf, one output), or None where it does not trace so.

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
    return closed


def trace(loss: Callable[..., Any], position: int, param_dynamic: Sequence[Any],
          arg_dynamic: Sequence[Any], closed: Any | None = None) -> Traced | None:
    """`loss(param_dynamic, arg_dynamic)` as a jaxpr to interpret, or None (evaluate directly);
    `closed`: its `loss_jaxpr`, where already traced."""
    closed = loss_jaxpr(loss, param_dynamic, arg_dynamic) if closed is None else closed
    return None if closed is None else Traced(closed, position)


# ------------------------------------------------------------------ whether it pays

# A time estimate per path: compiling its program (seconds per equation of the traced
# per-point function) plus evaluating it at every point (cost units per second; a followed
# change runs as many small operations, counted `LOCAL_SLOWDOWN` times slower per unit).
# Measured on 2 CPU cores in float64 (bench models: MLPs, a CNN, a transformer block):
# ~3-7 ms per equation to compile, 1e9 (convolutions) to 2e10 (products) units per second.
COMPILE_SECONDS_PER_EQUATION = 4e-3
UNITS_PER_SECOND = 5e9
LOCAL_SLOWDOWN = 2.0
# A check is often called again with the same shapes (every N training steps, a test suite),
# and those calls pay the evaluations again but compile nothing: the decisions made from this
# cost model (`decision`, `sharing.groups`) weigh a program's evaluations this many times against
# its compilation.
CALLS = 4
# What one more equation costs per point in these units (elements touched, multiply-adds).
EQUATION_OVERHEAD = 64.0


@dataclasses.dataclass(frozen=True)
class Cost:
    """What a point's program costs: `per_point` units for each point of a batch (the
    equations that depend on the point), and `equations` in the program to compile."""

    per_point: float
    equations: int

    def seconds(self, points: int, slowdown: float = 1.0, calls: float = 1.0) -> float:
        """Compiling once, and evaluating `points` points on each of `calls` calls."""
        return (self.equations * COMPILE_SECONDS_PER_EQUATION
                + calls * points * slowdown * self.per_point / UNITS_PER_SECOND)


def cost_downstream(jaxpr: Any, batched: Sequence[bool], both_batched: float = 1.0) -> float:
    """The cost of the equations of `jaxpr` that depend on its `batched` inputs: what each
    point of a `vmap` computes (the rest is computed once for the batch). `both_batched`:
    the cost of a product of two batched operands relative to one with an unbatched operand
    (a batch of small products, where the other is one large product)."""
    touched = {v for v, b in zip(jaxpr.invars, batched) if b}
    total = 0.0
    for eqn in jaxpr.eqns:
        hit = [_jaxpr.is_var(v) and v in touched for v in eqn.invars]
        if not any(hit):
            continue
        body = _jaxpr.call_body(eqn)
        if body is not None:
            total += cost_downstream(body[0], hit, both_batched)
        else:
            both = _jaxpr.name(eqn) in (_jaxpr.DOT, _jaxpr.CONV) and all(hit[:2])
            total += _jaxpr.cost(eqn) * (both_batched if both else 1.0) + EQUATION_OVERHEAD
        touched.update(v for v in eqn.outvars if _jaxpr.is_var(v))
    return total


def cost(one: Callable[..., Any], shared: Any, *point: Any) -> Cost:
    """The cost of `one(shared, *point)` (`point` given by shapes), from its jaxpr."""
    def spec(x):
        aval = jax.typeof(x)
        return jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=aval.weak_type)

    closed = _jaxpr.trace(one, jax.tree.map(spec, shared), *point)
    n_point = sum(len(jax.tree.leaves(p)) for p in point)
    n_in = len(closed.jaxpr.invars)
    per_point = cost_downstream(closed.jaxpr, [k >= n_in - n_point for k in range(n_in)])
    return Cost(per_point, sum(1 for _ in _jaxpr.equations(closed.jaxpr)))


def direct_cost(closed: Any, positions: Sequence[int], param_dynamic: Sequence[Any],
                both_batched: float = 1.0) -> Cost:
    """The cost of the loss (its `loss_jaxpr`) with one entry of a leaf at `positions` moved
    directly (`engine.EntryLoss`, `engine.SharedEntryLoss`): what depends on those leaves,
    from their first use on, and each point's selection of its entry in every one of them
    (`both_batched` as in `cost_downstream`)."""
    jaxpr = closed.jaxpr
    moved = set(positions)
    leaves = [param_dynamic[p] for p in positions]
    # the comparison with the index, the value broadcast, the select
    select = sum(3 * (int(np.size(x)) + EQUATION_OVERHEAD) for x in leaves)
    index = max(3 * np.ndim(x) + 2 for x in leaves)   # the entries' flat index
    batched = [k in moved for k in range(len(jaxpr.invars))]
    return Cost(cost_downstream(jaxpr, batched, both_batched) + select,
                sum(1 for _ in _jaxpr.equations(jaxpr)) + index + 2 * len(leaves))


def costs(traced: Traced, param_dynamic: Sequence[Any], arg_dynamic: Sequence[Any],
          direct: Cost | None = None) -> tuple[Cost, Cost]:
    """(following the change, evaluating directly) for one moved entry; `direct`: the
    second, where known already."""
    leaf = param_dynamic[traced.position]
    point = (jax.ShapeDtypeStruct((), np.int32), jax.ShapeDtypeStruct((), leaf.dtype))
    shared = (tuple(param_dynamic), tuple(arg_dynamic))
    if direct is None:
        direct = direct_cost(traced.closed, [traced.position], param_dynamic)
    return (cost(lambda sh, i, v: traced.at_entry(sh[0], sh[1], i, v), shared, *point),
            direct)


def decision(traced: Traced, param_dynamic: Sequence[Any],
             arg_dynamic: Sequence[Any]) -> Cost | None:
    """What following a point's change costs, where following the changes of the leaf's
    entries (`traced.at_entry`) is quicker than evaluating them directly for a full check of
    the leaf (two points per entry), compiled once and evaluated on `CALLS` calls, from the
    jaxprs of both: not where the change spreads over everything downstream anyway (a leaf
    whose first use has no rule, a change that every row of a norm reads), nor where the leaf
    has too few entries to repay a program of its own; None where it is not."""
    points = 2 * int(np.size(param_dynamic[traced.position]))
    # A screen before tracing the followed path: its program holds every equation of the
    # loss (those at θ beside the changed ones), so a leaf whose direct evaluation costs less
    # than compiling that many (a bias, a norm's scale) is not traced at all
    direct = direct_cost(traced.closed, [traced.position], param_dynamic)
    least = Cost(0.0, sum(1 for _ in _jaxpr.equations(traced.closed.jaxpr)))
    if least.seconds(0) >= direct.seconds(points, calls=CALLS) - direct.seconds(0):
        return None
    try:
        local, direct = costs(traced, param_dynamic, arg_dynamic, direct)
    except Exception:  # a rule that cannot trace: the direct evaluation
        return None
    # the direct evaluation adds no program of its own: the leaves evaluated directly share
    # one where that pays (`sharing`), so only the followed path is charged its compilation
    quicker = (local.seconds(points, LOCAL_SLOWDOWN, calls=CALLS)
               < direct.seconds(points, calls=CALLS) - direct.seconds(0))
    return local if quicker else None
