"""Random directions in one leaf, and batched evaluation of the loss along them.

Direction `i` of checked leaf `L`, restricted to the flat index range `[lo, hi)` without an
optional hole `[hole_lo, hole_hi)` inside it (fast mode's clearing test leaves out the
components it has checked one by one), is

    uⱼ = rⱼ · sⱼ · c   for lo ≤ j < hi outside the hole,   0 elsewhere,

with Rademacher signs rⱼ = ±1: bit j mod 32 of h(⌊j/32⌋), h a counter-based hash of
(seed, L, i) and the word index, two rounds of the lowbias32 integer mixer (C. Wellons,
"Prospecting for hash functions", 2018); one hash per 32 entries, and it compiles in a
fraction of the time of `jax.random`'s threefry. The scale sⱼ is the power of two in
[max(1, |θⱼ|), 2·max(1, |θⱼ|)), and c the power of two in (1/(2√m), 1/√m], m the number of
entries of the support (hi − lo less the hole): a step t
along u moves each component by about t·max(1, |θⱼ|)/√m, the relative step of full mode spread
over m components, and keeping ‖u‖ near 1 whatever the size of the set lets the same step rule
(t = ε^(1/3), Richardson at ε^(1/5)) serve a whole leaf and a handful of components alike.
Powers of two make t·uⱼ exact for a step t that is one too (`power_of_two`), so θ + t·u is
usually exact in the working dtype (`joint` checks it once per call instead of summing the
rounding of every point).

The signs are generated inside the compiled function from the direction's number, so no (k, n)
matrix of directions is ever stored: a row of a request is just (number, lo, hi, hole, t). Rows are
grouped by direction: the compiled function builds each direction's u (and u·g, ‖u∘A‖,
u[lo]) once and evaluates the loss at all its steps (`losses_along`). As in `engine`, one leaf is
perturbed at a time, batches have fixed shapes (directions and steps padded), and the compiled
programs are keyed on the hashable `Problem` and the shapes, so repeated checks reuse them.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..inputs.placement import flat, flatten, mesh_of, shaped_like, to_device
from ..inputs.problem import Problem
from . import engine
from .engine import choose_batch_size

# Points per compiled batch when memory allows: a test of k = 21 directions takes 2k = 42.
POINTS_PER_CALL = 64
# Perturbed entries (directions × steps × leaf size) evaluated in one vmap; beyond that, a
# sequential loop (see `_evaluate_directions`, `losses_along`).
VMAP_ENTRIES = 8192
# Steps per direction in every call: a central difference's ±t. One compiled program per leaf
# then serves every call (compiling is most of a small check); a direction with more rows
# (Richardson's 6) is split into groups, each building u again.
STEPS = 2


def _mix(x):
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _signs(key, n, dtype):
    """±1 for entries 0..n−1: bit j mod 32 of the hash of word ⌊j/32⌋."""
    w = -(-n // 32)
    words = _mix(_mix(jnp.arange(w, dtype=jnp.uint32) ^ key) + key)
    bits = (jnp.broadcast_to(words[:, None], (w, 32))
            >> jax.lax.broadcasted_iota(jnp.uint32, (w, 32), 1)) & 1
    # arithmetic: faster than a select; converted before the reshape: half the compile time
    return (1 - 2 * bits.astype(dtype)).reshape(-1)[:n]


def pow2_at_or_above(x):
    """The power of two in [x, 2x), for normal x ≥ 1: x with its mantissa bits cleared is the
    power of two at or below it (bit operations: a fraction of frexp's compile time)."""
    dtype = jnp.dtype(x.dtype)
    uint = {2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}[dtype.itemsize]
    mantissa_bits = (1 << jnp.finfo(dtype).nmant) - 1
    bits = jax.lax.bitcast_convert_type(x, uint)
    below = jax.lax.bitcast_convert_type(bits & ~jnp.asarray(mantissa_bits, uint), dtype)
    return jnp.where(below == x, below, 2 * below)


def magnitudes(theta, m):
    """|uⱼ| = sⱼ·c of a direction on a range of m entries (powers of two), for every entry.

    Without a mask, so that a whole leaf's direction has no 1-vs-0 array for XLA to fold."""
    scale = pow2_at_or_above(jnp.maximum(1, jnp.abs(theta)))
    return scale / pow2_at_or_above(jnp.sqrt(jnp.asarray(m, theta.dtype)))


def scales(lo, hi, hole_lo, hole_hi, theta, index=None):
    """|uⱼ| of every direction on [lo, hi) without the hole [hole_lo, hole_hi) (inside the
    range, or empty): sⱼ·c, 0 elsewhere; m = hi − lo − (hole_hi − hole_lo). `theta`: the
    leaf's entries at flat `index` (default: all of them, in order)."""
    if index is None:
        index = jnp.arange(theta.size, dtype=lo.dtype)
    inside = (index >= lo) & (index < hi) & ((index < hole_lo) | (index >= hole_hi))
    return jnp.where(inside, magnitudes(theta, hi - lo - (hole_hi - hole_lo)), 0)


def signs(seed, leaf, number, n, dtype):
    """rⱼ = ±1 of direction `number` of checked leaf `leaf`, for j < n."""
    key = _mix(_mix(_mix(seed) ^ leaf) ^ number.astype(jnp.uint32))
    return _signs(key, n, dtype)


def signs_at(seed, leaf, number, indices, dtype):
    """rⱼ of `signs` at the flat `indices` only (the hash of their words alone)."""
    key = _mix(_mix(_mix(seed) ^ leaf) ^ number.astype(jnp.uint32))
    words = _mix(_mix((indices // 32).astype(jnp.uint32) ^ key) + key)
    bits = (words >> (indices % 32).astype(jnp.uint32)) & 1
    return 1 - 2 * bits.astype(dtype)


# NumPy twins of the hash and the scales, for directions built on the host (`joint`'s small
# params: nothing to compile). Bit for bit the same values (tests/internal/test_directions).

def _mix_host(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def _sign_bits_host(seed: int, leaf: int, numbers: np.ndarray, n: int) -> np.ndarray:
    """The bits of `signs` (1 where rⱼ = −1) for each of `numbers`: (len(numbers), n) uint8."""
    with np.errstate(over="ignore"):   # uint32 products wrap, as in XLA
        seed_, leaf_ = np.full(1, seed, np.uint32), np.full(1, leaf, np.uint32)
        keys = _mix_host(_mix_host(_mix_host(seed_) ^ leaf_)
                         ^ np.asarray(numbers).astype(np.uint32))[:, None]
        words = _mix_host(_mix_host(np.arange(-(-n // 32), dtype=np.uint32)[None, :] ^ keys)
                          + keys)
    # bit j mod 32 of word ⌊j/32⌋: the words' bytes little-endian, each byte's bits from its
    # least significant
    return np.unpackbits(words.astype("<u4").view(np.uint8), axis=1,
                         bitorder="little")[:, :n]


def signs_host(seed: int, leaf: int, numbers: np.ndarray, n: int,
               dtype: Any) -> np.ndarray:
    """`signs(seed, leaf, number, n, dtype)` for each of `numbers`: rows (len(numbers), n)."""
    r = _sign_bits_host(seed, leaf, numbers, n).astype(dtype)
    r *= -2   # 1 − 2·bit, in place: NumPy's quickest form of it
    r += 1
    return r


def pow2_at_or_above_host(x: np.ndarray) -> np.ndarray:
    """`pow2_at_or_above` by NumPy."""
    x = np.asarray(x)
    uint = {2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize]
    mantissa_bits = uint((1 << np.finfo(x.dtype).nmant) - 1)
    below = (x.view(uint) & ~mantissa_bits).view(x.dtype)
    return np.where(below == x, below, 2 * below)


def _direction(seed, leaf, number, lo, hi, hole_lo, hole_hi, theta):
    return (signs(seed, leaf, number, theta.size, theta.dtype)
            * scales(lo, hi, hole_lo, hole_hi, theta)).astype(theta.dtype)


def whole_direction(seed, leaf, number, theta):
    """`_direction` on the whole leaf."""
    return (signs(seed, leaf, number, theta.size, theta.dtype)
            * magnitudes(theta, theta.size)).astype(theta.dtype)


def linear_bound(g, coefficients):
    """Aᵢ = slope·|gᵢ| + offset, the bound on the rounding of each gradient entry, formed
    where it is used (fused into the sums over u): never stored, so a leaf's program holds no
    array of bounds beside its gradient."""
    return coefficients[0] * jnp.abs(g) + coefficients[1]


def gradient_input(g: Any, dtype: Any) -> Any:
    """The gradient `g` as a program's input beside params of working dtype `dtype`: a
    device array in a float dtype of 32 bits up to `dtype`'s width stays as it is, and the
    programs widen it where they read it (the products with u promote it, a cast fused into
    their sums), so a narrower gradient (a `grad_fn`'s float32 one) is not held again in
    float64. `jax.grad`'s gradient of float64 working copies is float64 already: there this
    changes nothing (measured at 10⁸ parameters: no change in peak memory). Anything else is
    converted where it lives (`to_device`)."""
    dtype = np.dtype(dtype)
    if (isinstance(g, jax.Array) and jnp.issubdtype(g.dtype, jnp.floating)
            and 4 <= g.dtype.itemsize <= dtype.itemsize):
        return g
    return to_device(g, dtype)


def power_of_two(t: float) -> float:
    """The power of two nearest to t > 0 (in log scale)."""
    return float(2.0 ** np.round(np.log2(t)))


class Along(NamedTuple):
    """Per row: the loss at the point P = θ + t·u, and the analytic side of that row."""

    f: np.ndarray         # loss at P (rounded to the working dtype)
    g_step: np.ndarray    # g·(P − θ): the analytic change along the step actually taken
    gu: np.ndarray        # u·g
    spread: np.ndarray    # ‖u∘A‖, A the bound on the rounding of each gᵢ
    u_sum: np.ndarray     # u at lo: Σ uᵢ for a single-component range (where it is used)


def losses_along(problem: Problem, position: int, param_dynamic, arg_dynamic, u, ts, g,
                 u_dot_g, products: Sequence[Any] | None = None):
    """Loss at θ + t·u for each t in ts (1-D), and g·(P − θ) for the point P actually
    evaluated. θ is param_dynamic[position]; u and g are flat; u_dot_g is u·g.

    For params of `engine.LOCAL_CHANGES_MIN_SIZE` entries or more, products with the leaf are
    formed as θ·x + t·(u·x), with u·x shared by the steps (`local_changes`); where every use
    of the leaf is such a product, P is θ + t·u exactly. Otherwise P is θ + t·u rounded to
    the leaf's dtype.
    """
    base = param_dynamic[position]
    theta = flat(base)

    def direct(t):
        point = theta + t * u
        dynamic = list(param_dynamic)
        dynamic[position] = shaped_like(point, base)
        # elementwise products then sums: exact float32 on GPUs too (a dot could use TF32)
        return problem.loss(dynamic, arg_dynamic), jnp.sum(g * (point - theta))

    traced = engine.traced_loss(problem, position, param_dynamic, arg_dynamic)
    if traced is not None:
        def local(t):
            f, exact = traced.along(param_dynamic, arg_dynamic, u, t, products)
            return f, (t * u_dot_g if exact else jnp.sum(g * ((theta + t * u) - theta)))

        try:  # the steps share the products with u: all of them in one vmap
            return jax.vmap(local)(ts)
        except Exception:
            pass
    # vmap over up to VMAP_ENTRIES perturbed entries at a time: the steps of a large leaf one
    # by one (a vmap materialises T copies in the layout of a GEMM over all of them, several
    # times slower on CPU than T plain GEMMs), those of a small leaf all at once
    steps_per_vmap = max(1, min(ts.shape[0], VMAP_ENTRIES // theta.size))
    if steps_per_vmap == ts.shape[0]:
        return jax.vmap(direct)(ts)  # no loop: quicker to compile
    return jax.lax.map(direct, ts, batch_size=steps_per_vmap)


def _evaluate_directions(problem: Problem, position: int, map_batch: int, param_dynamic,
                         arg_dynamic, g, rounding, seed, leaf, products, count, numbers, lo,
                         hi, hole_lo, hole_hi, ts):
    """Per direction j < count (numbers, lo, hi, hole_lo, hole_hi of shape (J,)): losses_along
    at the steps
    ts[j] (J, T), and u·g, ‖u∘rounding‖, u[lo]. Directions from `count` on are padding: their
    outputs are left at 0 and cost nothing. Compiled and run by `engine.call_batches`."""
    theta = flat(param_dynamic[position])

    def per_direction(x):
        number, lo_, hi_, hole_lo_, hole_hi_, ts_ = x
        u = _direction(seed, leaf, number, lo_, hi_, hole_lo_, hole_hi_, theta)
        gu = jnp.sum(u * g)
        f, g_step = losses_along(problem, position, param_dynamic, arg_dynamic, u, ts_, g, gu,
                                 products or None)
        spread = jnp.sqrt(jnp.sum((u * linear_bound(g, rounding)) ** 2))
        # Σu: u[lo] where the range has one component, the only place it is used. Neither a
        # gather (from a sharded u it needs collectives named by hand under Explicit axes)
        # nor a masked sum (its mask would be one more leaf-sized temporary: XLA's CPU
        # reductions take their operands materialised)
        return f, g_step, gu, spread, jnp.sum(u)

    return _over_directions(per_direction, map_batch, count,
                            (numbers, lo, hi, hole_lo, hole_hi, ts))


def _over_directions(per_direction, map_batch: int, count, xs):
    """`per_direction` of each direction of `xs`, the first `count` real.

    `map_batch` directions per step of a loop over the directions: with a large leaf (one
    per step) the products with the perturbed leaf stay plain GEMMs instead of products
    batched over directions, which XLA's CPU backend runs several times slower; a small
    leaf vmaps many directions at once. The loop stops after the last real direction: it
    is `lax.map(per_direction, xs, batch_size=map_batch)` without the padding's cost."""
    numbers = xs[0]
    batched = jax.vmap(per_direction)
    if map_batch >= numbers.shape[0]:
        return batched(xs)

    def chunk(i, outs):
        x = [jax.lax.dynamic_slice_in_dim(c, i * map_batch, map_batch) for c in xs]
        return [jax.lax.dynamic_update_slice_in_dim(o, r, i * map_batch, 0)
                for o, r in zip(outs, batched(x))]

    shapes = jax.eval_shape(batched, xs)
    outs = [jnp.zeros(r.shape, r.dtype) for r in shapes]
    return jax.lax.fori_loop(0, (count + map_batch - 1) // map_batch, chunk, outs)


# A direction on a few rows of a large leaf's leading axis is built and followed through the
# loss on a window of ⌈rows / WINDOW_PARTS⌉ rows (`_evaluate_window`), where the leaf has at
# least WINDOW_MIN_SIZE entries and its changes are followed (`local_changes`): a search's
# ranges halve at every level, and past the first few they fit in the window, whose
# products cost its rows, not the leaf's.
WINDOW_PARTS = 32
WINDOW_MIN_SIZE = 1 << 16


def window_rows(shape: Sequence[int]) -> int:
    """R, the rows of a leaf's window (`_evaluate_window`)."""
    return max(1, -(-int(shape[0]) // WINDOW_PARTS))


def window_start(lo, leaf_shape: Sequence[int], rows: int):
    """The first row of the window of a range starting at flat index `lo` (NumPy or traced):
    lo's row, or the last R rows where fewer are left."""
    per_row = int(np.prod(leaf_shape[1:], dtype=np.int64))
    minimum = jnp.minimum if isinstance(lo, jax.Array) else np.minimum
    return minimum(lo // per_row, int(leaf_shape[0]) - rows)


def fits_window(lo: np.ndarray, hi: np.ndarray, leaf_shape: Sequence[int],
                rows: int) -> bool:
    """Whether every range [lo, hi) lies in its window."""
    per_row = int(np.prod(leaf_shape[1:], dtype=np.int64))
    start = window_start(np.asarray(lo), leaf_shape, rows)
    return bool(np.all((np.asarray(hi) - 1) // per_row < start + rows))


def _evaluate_window(problem: Problem, position: int, map_batch: int, rows: int,
                     param_dynamic, arg_dynamic, g, rounding, seed, leaf, products, count,
                     numbers, lo, hi, hole_lo, hole_hi, ts):
    """`_evaluate_directions` for ranges that fit in the window of `rows` rows from their
    start (`fits_window`): u built on those rows alone (the same signs and scales as on
    the whole leaf: `signs_at` of the global indices), followed through the loss by
    `local_changes.Traced.along_window`."""
    base = param_dynamic[position]
    theta = flat(base)
    traced = engine.traced_loss(problem, position, param_dynamic, arg_dynamic)
    assert traced is not None   # `Directions.along` takes this program only then
    per_row = theta.size // base.shape[0]
    width = rows * per_row

    def per_direction(x):
        number, lo_, hi_, hole_lo_, hole_hi_, ts_ = x
        row = window_start(lo_, base.shape, rows)
        start = row * per_row
        index = start + jnp.arange(width, dtype=lo_.dtype)
        theta_w = jax.lax.dynamic_slice_in_dim(theta, start, width)
        g_w = jax.lax.dynamic_slice_in_dim(g, start, width)
        u = (signs_at(seed, leaf, number, index, theta.dtype)
             * scales(lo_, hi_, hole_lo_, hole_hi_, theta_w, index)).astype(theta.dtype)
        gu = jnp.sum(u * g_w)
        u_rows = u.reshape((rows, *base.shape[1:]))

        def local(t):
            f, exact = traced.along_window(param_dynamic, arg_dynamic, u_rows, row, t,
                                           products or None)
            return f, (t * gu if exact else jnp.sum(g_w * ((theta_w + t * u) - theta_w)))

        f, g_step = jax.vmap(local)(ts_)
        spread = jnp.sqrt(jnp.sum((u * linear_bound(g_w, rounding)) ** 2))
        return f, g_step, gu, spread, jnp.sum(u)

    return _over_directions(per_direction, map_batch, count,
                            (numbers, lo, hi, hole_lo, hole_hi, ts))


def _products_at_theta(problem: Problem, position: int, param_dynamic, arg_dynamic):
    traced = engine.traced_loss(problem, position, param_dynamic, arg_dynamic)
    assert traced is not None   # `Directions._products` asks only then
    return traced.products_at_theta(param_dynamic, arg_dynamic)


@jax.jit
def _direction_vector(seed, leaf, number, lo, hi, hole_lo, hole_hi, theta):
    return _direction(seed, leaf, number, lo, hi, hole_lo, hole_hi, theta)


def direction_vector(seed, leaf, number, lo, hi, theta, hole=(0, 0)):
    """Direction `number` of checked leaf `leaf` on `[lo, hi)` without `hole` (int32 bounds)."""
    hole_lo, hole_hi = (jnp.asarray(x, jnp.int32) for x in hole)
    return _direction_vector(seed, leaf, number, lo, hi, hole_lo, hole_hi, theta)


@dataclasses.dataclass
class Directions:
    """Evaluates the loss and the analytic gradient along directions of one leaf.

    Keeps a count of loss evaluations (`evaluations`) and of the direction numbers handed out
    (`fresh`), so that every test draws signs independent of the tests before it.
    """

    problem: Problem
    position: int
    param_dynamic: tuple[Any, ...]
    arg_dynamic: tuple[Any, ...]
    leaf_number: int
    seed: int
    g: Any                          # the analytic gradient of the leaf, flat (on device)
    rounding: Any                   # the bound on each gᵢ's rounding, as `linear_bound`'s
    batch_size: int | None = None
    evaluations: int = 0
    issued: int = 0
    products: tuple[Any, ...] | None = None   # `_products`, once formed

    def __post_init__(self) -> None:
        leaf = self.param_dynamic[self.position]
        self.dtype = np.dtype(leaf.dtype)
        # cast where they live: a sharded leaf's gradient stays sharded, off the host
        self.g_device = gradient_input(self.g, self.dtype)
        self.rounding_device = to_device(self.rounding, self.dtype)
        self.size = int(np.prod(leaf.shape, dtype=np.int64))
        # Points per call, fixed for the leaf: a call holds `batch // T` directions of T steps.
        self.batch = choose_batch_size(self.size * self.dtype.itemsize, POINTS_PER_CALL,
                                       self.batch_size)

    @property
    def theta(self) -> Any:
        """The leaf, flat: formed when asked (rarely: a direction's vector, a kink's
        neighbourhood), never kept, so a large leaf is not held twice."""
        return flatten(jnp.asarray(self.param_dynamic[self.position]))

    def _group(self, numbers, lo, hi, hole_lo, hole_hi):
        """Rows grouped by direction: (J, 5) keys, and each row's group and slot in it.

        A direction with more rows than `STEPS` is split into groups of at most `STEPS`."""
        keys = np.stack([np.asarray(x, np.int64).reshape(-1)
                         for x in (numbers, lo, hi, hole_lo, hole_hi)], 1)
        keys, group = np.unique(keys, axis=0, return_inverse=True)
        group = group.reshape(-1)
        order = np.argsort(group, kind="stable")
        counts = np.bincount(group, minlength=len(keys))
        slot = np.empty_like(group)
        slot[order] = np.arange(group.size) - np.repeat(np.cumsum(counts) - counts, counts)
        if counts.max() > STEPS:
            chunk = slot // STEPS
            pairs, group = np.unique(np.stack([group, chunk], 1), axis=0, return_inverse=True)
            keys, group, slot = keys[pairs[:, 0]], group.reshape(-1), slot % STEPS
        return keys, group, slot

    def _map_batch(self, width: int) -> int:
        """Directions vmapped together, each of `width` entries: up to `VMAP_ENTRIES`
        perturbed entries, at least one."""
        return max(1, min(self.batch, VMAP_ENTRIES // (STEPS * width)))

    @functools.cached_property
    def _window_rows(self) -> int | None:
        """R, the rows of the leaf's window where `_evaluate_window` can take the leaf (a
        large leaf on one device whose changes are followed through the loss), else None:
        decided once per leaf, not per call of a search."""
        shape = tuple(self.param_dynamic[self.position].shape)
        if (self.size < WINDOW_MIN_SIZE or not shape
                or mesh_of(self.param_dynamic) is not None):
            return None
        rows = window_rows(shape)
        if rows >= shape[0] or engine.traced_loss(self.problem, self.position,
                                                  self.param_dynamic, self.arg_dynamic) is None:
            return None
        return rows

    def _window(self, keys) -> int | None:
        """`_window_rows` where every direction of `keys` fits in its window, else None."""
        rows = self._window_rows
        shape = self.param_dynamic[self.position].shape
        if rows is None or not fits_window(keys[:, 1], keys[:, 2], shape, rows):
            return None
        return rows

    def _batches(self, keys, ts, b: int):
        """Directions cut into calls of a fixed size, the last padded (device arrays), `b`
        vmapped together."""
        per_call = -(-max(1, self.batch // STEPS) // b) * b
        for s in range(0, len(keys), per_call):
            k, t = keys[s:s + per_call], ts[s:s + per_call]
            pad = per_call - len(k)
            # padding is direction 0 on the whole leaf at t = 0; never evaluated when looped
            filler = np.array([[0, 0, self.size, 0, 0]] * pad, np.int64).reshape(-1, 5)
            k = np.concatenate([k, filler])
            t = np.concatenate([t, np.zeros((pad, t.shape[1]), t.dtype)])
            # NumPy arrays: the compiled program transfers them itself, a fraction of the
            # cost of a `device_put` each (a search makes ~20 calls of one direction)
            yield np.asarray(len(keys[s:s + per_call]), np.int32), *(
                np.ascontiguousarray(k[:, c], np.int32) for c in range(5)), t

    def _products(self) -> tuple[Any, ...]:
        """The leaf's products at θ where its changes are followed through the loss
        (`local_changes.Traced.products_at_theta`), formed once per leaf: each call then
        forms only the products with its directions (a search tests one direction per call,
        which on a wide layer halved the products of each). Empty where they are not, and
        for params sharded over a mesh (a product's layout, chosen by XLA in the program
        that forms it, could differ from the one each call would give it: a reshard per
        call)."""
        if self.products is None:
            # (asked only where the params are on one device: `traced_loss` keys the loss's
            # trace by shapes, and a trace from sharded arrays would be kept for programs)
            traced = None if mesh_of(self.param_dynamic) is not None else engine.traced_loss(
                self.problem, self.position, self.param_dynamic, self.arg_dynamic)
            self.products = () if traced is None else tuple(engine.call(
                _products_at_theta, (self.problem, self.position), tuple(self.param_dynamic),
                tuple(self.arg_dynamic)))
        return self.products

    def fresh(self, k: int) -> np.ndarray:
        """k direction numbers not used before in this leaf."""
        numbers = np.arange(self.issued, self.issued + k, dtype=np.int32)
        self.issued += k
        return numbers

    def _keys(self):
        return (np.asarray(self.seed, np.uint32), np.asarray(self.leaf_number, np.uint32))

    def along(self, numbers: np.ndarray, lo: np.ndarray, hi: np.ndarray, t: np.ndarray,
              hole_lo: np.ndarray | None = None, hole_hi: np.ndarray | None = None) -> Along:
        """The loss at θ + t·u (rounded to the working dtype) and the analytic side, per row;
        each row's direction on [lo, hi) without [hole_lo, hole_hi) (default: no hole)."""
        m = len(numbers)
        if m == 0:
            return Along(*(np.zeros(0) for _ in range(5)))
        no_hole = np.zeros(m, np.int64)
        keys, group, slot = self._group(numbers, lo, hi,
                                        no_hole if hole_lo is None else hole_lo,
                                        no_hole if hole_hi is None else hole_hi)
        ts = np.zeros((len(keys), STEPS), self.dtype)   # padding steps t = 0, dropped
        ts[group, slot] = t
        seed, leaf = self._keys()
        shared = (tuple(self.param_dynamic), tuple(self.arg_dynamic), self.g_device,
                  self.rounding_device, seed, leaf, self._products())
        rows = self._window(keys)
        if rows is None:
            b = self._map_batch(self.size)
            program, static = _evaluate_directions, (self.problem, self.position, b)
        else:
            b = self._map_batch(rows * self.size // self.param_dynamic[self.position].shape[0])
            program, static = _evaluate_window, (self.problem, self.position, b, rows)
        f, g_step, gu, spread, u_sum = engine.call_batches(
            program, static, shared, self._batches(keys, ts, b), len(keys))
        self.evaluations += m
        return Along(f[group, slot], g_step[group, slot], gu[group], spread[group],
                     u_sum[group])

    def vector(self, number: int, lo: int, hi: int, hole: tuple[int, int] = (0, 0)) -> np.ndarray:
        """Direction `number` on `[lo, hi)` without `hole`, flat, of the working dtype."""
        seed, leaf = self._keys()
        return np.asarray(direction_vector(seed, leaf, jnp.asarray(number, jnp.int32),
                                           jnp.asarray(lo, jnp.int32), jnp.asarray(hi, jnp.int32),
                                           self.theta, hole))

    def at(self, point: np.ndarray) -> Sequence[Any]:
        """The params' dynamic leaves with this leaf set to the flat `point`."""
        dynamic = list(self.param_dynamic)
        dynamic[self.position] = jnp.asarray(point.reshape(self.param_dynamic[self.position].shape))
        return dynamic
