"""The joint screen: one directional test of every leaf at once, before any leaf alone.

Group testing (`group_testing`) bisects a failing leaf; the joint screen is the level above
it. Direction i of the joint test moves every checked leaf L along L's own direction of
number `JOINT_NUMBERS + i` (`directions`, on L's whole range), all at the same time:
u = (u₁, …, u_L). Two consequences:

- **The same bound.** The Rademacher argument of `fast` holds for any nonzero error vector,
  so for the errors of all leaves together: a direction misses with probability ≤ 1/2 what a
  test of the leaf alone would catch, whatever the errors of the other leaves, and a single
  wrong entry of leaf L contributes |eⱼ|·|uⱼ| (about |eⱼ|·max(1, |θⱼ|)/√m_L), exactly as in L's
  own test.
- **One pass instead of one per leaf.** A point moves every leaf, so it costs one forward pass;
  testing leaf by leaf costs, per leaf, a pass downstream of that leaf (the first layer's
  leaves a whole pass each). In an MLP of d layers that is up to 2d passes per point.

The screen passes the leaves only when every direction is within round-off at the first step
(`verdicts.screen`). Anything else (a wrong gradient, a kink crossed, curvature that needs
the Richardson levels) sends the leaves on (`fast`: a probe of each, the search at once for a
leaf whose probe shows, then for the others and for each searched leaf without the block it
checked one by one the first test again with the blocks' gradient replaced by the values
measured there, `corrected_screen`, and where that does not pass one more joint test of fresh
directions, numbered after the first test's, each searched leaf's direction holed at its
block: `holes`): the joint screen never fails a leaf. The first test takes k + 1 directions,
so that it and the tests after it keep the bound of `fast` (≤ 2·2⁻ᵏ).

Its tolerance adds the analytic-rounding terms of all leaves, so a leaf is covered only where
the joint tolerance is at most `MAX_LOOSENING` times the one its own test would use; any other
leaf is tested on its own.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from ..evaluation import engine
from ..evaluation.directions import (
    VMAP_ENTRIES,
    gradient_input,
    linear_bound,
    magnitudes,
    pow2_at_or_above_host,
    power_of_two,
    scales,
    signs,
    signs_at,
    signs_host,
)
from ..inputs.placement import flat, is_distributed, shaped_like, sharded_in_types, to_host
from ..inputs.problem import Problem
from . import verdicts as v
from .direction_checks import HOEFFDING_Z, DirectionalChecks
from .taylor import LEVELS, TaylorResult, taylor_levels, taylor_result

# Direction numbers of the joint test, apart from those a leaf's own tests draw (from 0 up).
JOINT_NUMBERS = 1 << 30
# A leaf is covered by the joint screen if the joint tolerance is at most this many times
# the tolerance of its own test.
MAX_LOOSENING = 2.0


@jax.jit
def exact_steps(thetas, t, supports=None):
    """Whether θ ± t·|u| is exact for every entry of every leaf (t a power of two); `supports`:
    each leaf's number of entries in u's support (default: all; a hole makes |u| larger)."""
    supports = [theta.size for theta in thetas] if supports is None else supports

    def exact(theta, support):
        m = t * magnitudes(theta, support)
        # P = θ ± m exactly iff P − θ gives m back and P ∓ m gives θ back (a rounding error
        # of P is at least the ulp of one of them, so one of the two sees it)
        plus, minus = theta + m, theta - m
        return jnp.all((plus - theta == m) & (plus - m == theta)
                       & (minus - theta == -m) & (minus + m == theta))
    return functools.reduce(jnp.logical_and, [exact(flat(theta), m)
                                              for theta, m in zip(thetas, supports)])


def _evaluate_rows(problem: Problem, positions: tuple[int, ...], leaves: tuple[int, ...],
                   directions_per_vmap: int, exact_all: bool, param_dynamic, arg_dynamic,
                   gs, roundings, holes, seed, t, numbers, steps, moves):
    """Per row j (numbers, shape (J,)): the loss at the points θ + steps[j, s] ·
    moves[j, s, L] · u_L (s < 2; u_L leaf L's direction `numbers[j]`, on the whole leaf
    without the range `holes[L]` = (lo, hi), an int32 array (L, 2): one program for every
    hole; `roundings[L]` leaf L's `linear_bound` coefficients, (L, 2) too: one input for
    all leaves, where an input per leaf cost a tiny compiled kernel each),
    g·(P − θ) at each point P evaluated, and u_L·g_L per leaf; and per leaf ‖u_L∘A_L‖², which
    does not depend on the signs. `moves` is 1 or 0 per leaf: a row of the joint test moves
    every leaf it tests, the first point none (f(θ)).

    The program of large params, or of params on several devices (whose concatenation would
    gather them): each leaf's direction is built on its own, where it lives. Where every
    moved leaf's θ ± t·|u| is exact (`exact_all`, known before the call), g·(P − θ) is
    step·Σ u_L·g_L: no sum over every leaf per point. Small params on one device take the
    points built on the host instead (`HostDirections`, `_losses_at`)."""
    rows = (numbers, steps, moves)
    per_row, mags, spread_of = _per_leaf(problem, positions, leaves, param_dynamic,
                                         arg_dynamic, gs, roundings, holes, seed, t, exact_all)
    if directions_per_vmap == 1:
        # f(θ), the first row's points, evaluated once: a looped row that moves no leaf
        # builds no direction and evaluates nothing (one branch of the `cond` runs)
        f0 = problem.loss(param_dynamic, arg_dynamic)
        shapes = jax.eval_shape(per_row, jax.tree_util.tree_map(lambda x: x[0], rows))

        def at_theta(row):
            f, g_step, gu = (jnp.zeros(x.shape, x.dtype) for x in shapes)
            return f + f0.astype(f.dtype), g_step, gu

        f, g_step, gu = jax.lax.map(
            lambda row: jax.lax.cond(jnp.any(row[2] != 0), per_row, at_theta, row), rows)
    else:   # (vmapped, a `cond` would evaluate both branches)
        f, g_step, gu = jax.lax.map(per_row, rows, batch_size=directions_per_vmap)
    return f, g_step, gu, spread_of(mags)


# Directions of leaves of at most this many entries in all are built as one vector on the host
# (`HostDirections`). Beyond, the per-leaf program: the host's points (J·2 rows of every entry
# a call) would cost more a call than compiling the directions once.
CONCATENATED_MAX_ENTRIES = 1 << 17
# The key in place of a leaf number for the concatenated directions (leaf numbers are small).
CONCATENATED_KEY = 0xFFFFFFFF


def _two_points(at, total, *xs):
    # both points in one vmap for small params; one at a time for large ones (a vmap over
    # perturbed weights turns their products into batched GEMMs, slow on CPU)
    if 2 * total <= VMAP_ENTRIES:
        return jax.vmap(at)(*xs)
    return jax.lax.map(lambda x: at(*x), xs)


def _losses_at(problem: Problem, positions: tuple[int, ...], per_vmap: int, param_dynamic,
               arg_dynamic, first, second, active):
    """The loss at each row's two points, `first` and `second` (J, total: all leaves' entries
    in one vector, as `HostDirections` builds them), each leaf a slice of the point. Rows not
    `active` (padding) are skipped where the rows are looped over one at a time.

    One program serves the joint test, its clearing test (fewer leaves, holes) and every
    leaf's Taylor test, and all it compiles is the loss: the directions, their sums and the
    check that the steps are exact are NumPy's, on the host (at this size they take
    tens of milliseconds, where compiling them took most of a first check's joint program)."""
    sizes = [int(np.size(param_dynamic[p])) for p in positions]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def at(point):
        dynamic = list(param_dynamic)
        for i, position in enumerate(positions):
            part = jax.lax.slice_in_dim(point, int(offsets[i]), int(offsets[i + 1]))
            dynamic[position] = shaped_like(part, param_dynamic[position])
        return problem.loss(dynamic, arg_dynamic)

    def per_row(row):
        return _two_points(at, int(offsets[-1]), jnp.stack(row[:2]))

    rows = (first, second, active)
    if per_vmap > 1:
        return jax.lax.map(per_row, rows, batch_size=per_vmap)
    shape = jax.eval_shape(per_row, jax.tree_util.tree_map(lambda x: x[0], rows))

    def skipped(row):
        return jnp.zeros(shape.shape, shape.dtype)
    return jax.lax.map(lambda row: jax.lax.cond(row[2], per_row, skipped, row), rows)


# The joint test's rows go to the device in parts (`HostDirections`): at least two, so that
# the host builds the next part's points while the device evaluates the loss at the last
# part's, and of at most this many point entries each (float64: 32 MiB), which bounds the
# host's and the device's copies of them.
HOST_PARTS = 2
HOST_PART_ENTRIES = 1 << 22


class HostDirections:
    """The joint directions of small params on one device, by NumPy, in the params' dtype:
    every leaf's direction a slice of one vector over all their entries (one hash; number
    j's signs differ from those of direction j of the leaf's own tests, which use other
    numbers anyway), the points of rows as `_evaluate_rows` defines them, g·(P − θ) at each,
    u_L·g_L per row and leaf, and ‖u_L∘A_L‖² per leaf (`spread2`)."""

    def __init__(self, positions: Sequence[int], param_dynamic: Sequence[Any],
                 g_leaves: Sequence[Any], roundings: Sequence[Any],
                 holes: Sequence[tuple[int, int] | None], seed: int, t: float) -> None:
        self.thetas = [np.asarray(to_host(param_dynamic[p])).reshape(-1) for p in positions]
        dtype = self.dtype = self.thetas[0].dtype
        sizes = [theta.size for theta in self.thetas]
        n_leaves, self.total = len(sizes), sum(sizes)
        self.offsets = offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.theta = theta = np.concatenate(self.thetas)
        self.g = g = np.concatenate([np.asarray(to_host(x)).reshape(-1)
                                     for x in g_leaves]).astype(dtype)
        leaf_of = np.repeat(np.arange(n_leaves), sizes)
        hole = np.asarray([h or (0, 0) for h in holes], np.int64).reshape(n_leaves, 2)
        support = np.asarray(sizes, np.int64) - (hole[:, 1] - hole[:, 0])
        # |u| = s·c as `directions.magnitudes`, c from each leaf's support; 0 in its hole
        unmasked = (pow2_at_or_above_host(np.maximum(dtype.type(1), np.abs(theta)))
                    / pow2_at_or_above_host(np.sqrt(support.astype(dtype)))[leaf_of])
        index = np.arange(self.total) - offsets[leaf_of]
        self.mags = mags = np.where((index < hole[leaf_of, 0]) | (index >= hole[leaf_of, 1]),
                                    unmasked, dtype.type(0)).astype(dtype)
        # P = θ ± m exactly iff P − θ gives m back and P ∓ m gives θ back (`exact_steps`)
        m = dtype.type(t) * unmasked
        plus, minus = theta + m, theta - m
        inexact = ~((plus - theta == m) & (plus - m == theta) & (minus - theta == -m)
                    & (minus + m == theta))
        self.exact_leaf = np.bincount(leaf_of, weights=inexact, minlength=n_leaves) == 0
        r = np.asarray(roundings, dtype).reshape(n_leaves, 2)
        bound = mags * (r[leaf_of, 0] * np.abs(g) + r[leaf_of, 1])
        self.spread2 = np.stack([np.sum(x) for x in np.split(bound * bound, offsets[1:-1])])
        self.seed = seed

    def rows(self, rows: Rows) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """The points of `rows`, first and second (each (J, total), contiguous), g·(P − θ) at
        each (J, 2) and u_L·g_L (J, L)."""
        dtype, theta, g, offsets = self.dtype, self.theta, self.g, self.offsets
        # a move is 0 or 1 per leaf: (step·1)·u = step·u, and θ + (step·0)·u = θ exactly
        assert np.all((rows.moves == 0) | (rows.moves == 1))
        exact = rows.exact & np.all(self.exact_leaf | ~(rows.moves.sum(axis=1) > 0), axis=1)
        u = signs_host(self.seed, CONCATENATED_KEY, rows.numbers, self.total, dtype)
        u *= self.mags
        gus = np.stack([u[:, lo:hi] @ g[lo:hi] for lo, hi in zip(offsets[:-1], offsets[1:])],
                       axis=1).astype(np.float64)
        points, g_step = [], np.empty((len(rows), 2))
        inexact = np.flatnonzero(~exact)
        for s in range(2):
            point = rows.steps[:, s, None].astype(dtype) * u
            point += theta
            for r, leaf in zip(*np.nonzero(rows.moves[:, s] == 0)):
                point[r, offsets[leaf]:offsets[leaf + 1]] = self.thetas[leaf]
            points.append(point)
            g_step[:, s] = rows.steps[:, s] * np.sum(rows.moves[:, s] * gus, axis=1)
            # where a step is not exact, g·(P − θ) over every entry
            g_step[inexact, s] = (point[inexact] - theta) @ g
        return points, g_step, gus


def _per_leaf(problem, positions, leaves, param_dynamic, arg_dynamic, gs, roundings, holes,
              seed, t, exact_all):
    """`_evaluate_rows`' row function with each leaf's direction built on its own; its rows
    are the joint test's (and f(θ)), exact or not as `exact_all` says (known before: the
    large params' points then cost no sum over the params, and no branch)."""
    thetas = [flat(param_dynamic[p]) for p in positions]
    zero = jnp.asarray(0, jnp.int32)
    mags = [scales(zero, jnp.asarray(theta.size, jnp.int32), holes[i, 0], holes[i, 1], theta)
            for i, theta in enumerate(thetas)]
    total = sum(theta.size for theta in thetas)

    def per_row(row):
        number, steps_, moves_ = row   # exact or not: `exact_all`
        us = [signs(seed, jnp.uint32(leaf), number, theta.size, theta.dtype) * m
              for leaf, theta, m in zip(leaves, thetas, mags)]
        gus = [jnp.sum(u * g) for u, g in zip(us, gs)]

        def at(step, move):
            dynamic = list(param_dynamic)
            points = [theta + (step * move[i]) * u for i, (theta, u) in enumerate(zip(thetas, us))]
            for position, point in zip(positions, points):
                dynamic[position] = shaped_like(point, param_dynamic[position])
            if exact_all:
                g_step = step * sum(move[i] * gu for i, gu in enumerate(gus))
            else:
                g_step = sum(jnp.sum(g * (point - theta))
                             for g, point, theta in zip(gs, points, thetas))
            return problem.loss(dynamic, arg_dynamic), g_step

        f, g_step = _two_points(at, total, steps_, moves_)
        return f, g_step, jnp.stack(gus)

    def spread_of(mags):
        return jnp.stack([jnp.sum((m * linear_bound(g, a)) ** 2)
                          for m, g, a in zip(mags, gs, roundings)])

    return per_row, mags, spread_of


@dataclasses.dataclass(frozen=True)
class Rows:
    """Rows of the one program of these leaves (`_losses_at`, or `_evaluate_rows`): f(θ)
    first, the Taylor tests' points, the joint test's directions, and padding to a count that
    depends only on the leaves and k."""

    numbers: np.ndarray     # (J,)
    steps: np.ndarray       # (J, 2)
    moves: np.ndarray       # (J, 2, L)
    exact: np.ndarray       # (J,) bool: the row's steps are ±t, the joint step
    active: np.ndarray      # (J,) bool: False for padding

    @staticmethod
    def joint(numbers: np.ndarray, step: float, tested: np.ndarray) -> Rows:
        k = len(numbers)
        return Rows(numbers, np.tile([step, -step], (k, 1)),
                    np.broadcast_to(tested, (k, 2, len(tested))).astype(np.float64),
                    np.ones(k, bool), np.ones(k, bool))

    @staticmethod
    def origin(n_leaves: int, taylor_steps: np.ndarray | None = None) -> Rows:
        """f(θ) (the first point), then with `taylor_steps` each leaf moved alone along its
        direction 0 at each step; two points a row."""
        points = [(-1, 0.0)]
        if taylor_steps is not None:
            points += [(leaf, s) for leaf in range(n_leaves) for s in taylor_steps]
        points += [(-1, 0.0)] * (len(points) % 2)
        j = len(points) // 2
        st, moves = np.zeros((j, 2)), np.zeros((j, 2, n_leaves))
        for i, (leaf, s) in enumerate(points):
            st[i // 2, i % 2] = s
            if leaf >= 0:
                moves[i // 2, i % 2, leaf] = 1
        return Rows(np.zeros(j, np.int64), st, moves, np.zeros(j, bool), np.ones(j, bool))

    @staticmethod
    def padding(j: int, n_leaves: int) -> Rows:
        return Rows(np.zeros(j, np.int64), np.zeros((j, 2)), np.zeros((j, 2, n_leaves)),
                    np.zeros(j, bool), np.zeros(j, bool))

    def __add__(self, other: Rows) -> Rows:
        return Rows(*(np.concatenate([a, b]) for a, b in zip(dataclasses.astuple(self),
                                                             dataclasses.astuple(other))))

    def __len__(self) -> int:
        return len(self.numbers)

    def __getitem__(self, rows: slice) -> Rows:
        return Rows(*(x[rows] for x in dataclasses.astuple(self)))


def row_count(n_leaves: int, k: int) -> int:
    """Rows of every call of the program for these leaves and tests of k directions: the
    first call's f(θ), Taylor tests and k joint directions, or a clearing test's f(θ) and k
    directions (one compiled program for both)."""
    return len(Rows.origin(n_leaves, np.zeros(LEVELS))) + k


def one_vector(positions: Sequence[int], param_dynamic: Sequence[Any]) -> bool:
    """Whether the joint program builds the directions of these leaves as one vector (small
    params on one device); then it also holds their Taylor tests, which larger params run in
    a program of their own that follows each leaf's change through the loss
    (`taylor.taylor_tests`: a forward pass per point would cost more than compiling it)."""
    total = sum(int(np.size(param_dynamic[p])) for p in positions)
    return total <= CONCATENATED_MAX_ENTRIES and not any(
        is_distributed(param_dynamic[p]) for p in positions)


def evaluate_rows(problem: Problem, positions: Sequence[int], leaf_numbers: Sequence[int],
                  param_dynamic: Sequence[Any], arg_dynamic: Sequence[Any],
                  g_leaves: Sequence[Any], roundings: Sequence[Any], seed: int, step: float,
                  rows: Rows, holes: Sequence[tuple[int, int] | None]):
    """The loss at the points of `rows`, g·(P − θ) at each, u_L·g_L per row and leaf, and
    ‖u_L∘A_L‖² per leaf (`_evaluate_rows`), as float64 numpy arrays."""
    if one_vector(positions, param_dynamic):
        host = HostDirections(positions, param_dynamic, g_leaves, roundings, holes, seed, step)
        static = (problem, tuple(positions))
        parts, outs = _parts(rows, positions, param_dynamic), []
        for part, per_vmap in parts:   # dispatched as built: the device never waits for all
            points, g_step, gus = host.rows(part)
            outs.append((engine.call(_losses_at, (*static, per_vmap), tuple(param_dynamic),
                                     tuple(arg_dynamic), *points, part.active), g_step, gus))
        j = len(rows)
        f, g_step, gus = (np.concatenate([np.asarray(o[i], np.float64) for o in outs])[:j]
                          for i in range(3))
        return f, g_step, gus, host.spread2.astype(np.float64)
    static, dynamic = _program_inputs(problem, positions, leaf_numbers, param_dynamic,
                                      arg_dynamic, g_leaves, roundings, seed, step, rows, holes)
    out = engine.call(_evaluate_rows, static, *dynamic)
    return tuple(np.asarray(x, np.float64) for x in out)


def compile_ahead(problem: Problem, positions: Sequence[int], param_dynamic: Sequence[Any],
                  arg_dynamic: Sequence[Any], k: int, eps_f: float, rel_step: float) -> None:
    """Start compiling the program of the first joint test of these leaves (with their Taylor
    tests: `one_vector` params) before their gradient exists: its inputs' shapes are known
    (`engine.compile_call_ahead`), so it compiles beside the gradient's program."""
    if not one_vector(positions, param_dynamic):
        return
    rows = plan_rows(len(positions), k, JOINT_NUMBERS, power_of_two(rel_step), eps_f, None,
                     True, row_count(len(positions), k))
    (part, per_vmap), *_ = _parts(rows, positions, param_dynamic)
    total = sum(int(np.size(param_dynamic[p])) for p in positions)
    points = jax.ShapeDtypeStruct((len(part), total), param_dynamic[positions[0]].dtype)
    engine.compile_call_ahead(_losses_at, (problem, tuple(positions), per_vmap),
                              tuple(param_dynamic), tuple(arg_dynamic), points, points,
                              part.active)


def _parts(rows: Rows, positions: Sequence[int],
           param_dynamic: Sequence[Any]) -> list[tuple[Rows, int]]:
    """`rows` in parts of one length (one program for all; `HOST_PARTS`, more where a part
    would exceed `HOST_PART_ENTRIES`), each padded to whole vmapped groups (a remainder would
    be a second copy of the row's program), with the rows per group."""
    total = sum(int(np.size(param_dynamic[p])) for p in positions)
    size = min(-(-len(rows) // HOST_PARTS), max(1, HOST_PART_ENTRIES // (2 * total)))
    per_vmap = max(1, min(size, VMAP_ENTRIES // (2 * total)))
    size += -size % per_vmap
    count = -(-len(rows) // size)
    rows = rows + Rows.padding(count * size - len(rows), len(positions))
    return [(rows[i * size:(i + 1) * size], per_vmap) for i in range(count)]


def _program_inputs(problem: Problem, positions: Sequence[int], leaf_numbers: Sequence[int],
                    param_dynamic: Sequence[Any], arg_dynamic: Sequence[Any],
                    g_leaves: Sequence[Any], roundings: Sequence[Any], seed: int, step: float,
                    rows: Rows, holes: Sequence[tuple[int, int] | None]) -> tuple[tuple, tuple]:
    """The static and dynamic inputs of `_evaluate_rows` at `rows`: no padding rows (each
    would cost a forward pass in the loop, which one program for every call of these leaves
    is not worth at this size)."""
    dtype = np.dtype(param_dynamic[positions[0]].dtype)
    rows = Rows(*(x[rows.active] for x in dataclasses.astuple(rows)))
    total = sum(int(np.size(g)) for g in g_leaves)
    per_vmap = max(1, min(len(rows), VMAP_ENTRIES // (2 * total)))
    supports = [int(np.size(g)) - (h[1] - h[0] if h else 0) for g, h in zip(g_leaves, holes)]
    exact_all = bool(exact_steps([param_dynamic[p] for p in positions],
                                 jnp.asarray(step, dtype),
                                 [jnp.asarray(m, dtype) for m in supports]))
    static = (problem, tuple(positions), tuple(leaf_numbers), per_vmap, exact_all)
    # values from the host are converted there: no program of their own per dtype
    dynamic = (
        tuple(param_dynamic), tuple(arg_dynamic),
        tuple(gradient_input(_as_input(g, (int(np.size(g)),)), dtype)
              for g in g_leaves),
        np.stack([np.asarray(r, dtype) for r in roundings]),
        np.asarray([h or (0, 0) for h in holes], np.int32).reshape(len(holes), 2),
        np.asarray(seed, np.uint32), np.asarray(step, dtype),
        np.asarray(rows.numbers, np.int32), np.asarray(rows.steps, dtype),
        np.asarray(rows.moves, dtype))
    return static, dynamic


def _as_input(x: Any, shape: tuple[int, ...]) -> Any:
    """`x` in `shape`: a host value as a NumPy array (converted on the host by
    `gradient_input`: no program of its own), a device array reshaped where it is."""
    if not isinstance(x, jax.Array):
        return np.asarray(x).reshape(shape)
    return x if tuple(x.shape) == shape else x.reshape(shape)


@dataclasses.dataclass(frozen=True, eq=False)
class JointScreen:
    """The joint test's directional checks, the leaves it covers (by checked-leaf number), and
    each leaf's (f(θ), Taylor result) where they were asked for. `tested`: the leaves tested
    (indices into the leaves of the call), `own`: per direction and tested leaf, the
    tolerance of that leaf's own first step (`MAX_LOOSENING`), `paths` and `leaf_numbers`:
    those of every leaf of the call (for `JointScreen.corrected`)."""

    checks: DirectionalChecks
    covered: tuple[int, ...]
    taylor: tuple[tuple[float, TaylorResult], ...] = ()
    tested: tuple[int, ...] = ()
    own: np.ndarray | None = None
    paths: tuple[str, ...] = ()
    leaf_numbers: tuple[int, ...] = ()

    @property
    def passed(self) -> bool:
        return bool(np.all(self.checks.status == v.PASS))

    def corrected(self, shift: np.ndarray, slack: np.ndarray) -> JointScreen:
        """The same test with u·g of each direction moved by `shift` and its tolerance widened
        by `slack` (`corrected_screen`): no loss evaluated."""
        assert self.own is not None
        c = self.checks
        analytic, tolerance = c.analytic + shift, c.tolerance + slack
        # a NaN (a component's unbounded tolerance) fails, as everywhere
        status = np.where(np.abs(c.numerical - analytic) <= tolerance, v.PASS, v.FAIL)
        covered = np.all(tolerance[:, None] <= MAX_LOOSENING * self.own, axis=0)
        checks = dataclasses.replace(
            c, analytic=analytic, tolerance=tolerance, status=status.astype(np.int8),
            evaluations=0,
            joint=tuple(self.paths[i] for i, ok in zip(self.tested, covered) if ok))
        return dataclasses.replace(
            self, checks=checks, taylor=(),
            covered=tuple(self.leaf_numbers[i] for i, ok in zip(self.tested, covered) if ok))


def plan_rows(n_leaves: int, k: int, first_number: int, step: float, eps_f: float,
              tested: np.ndarray | None, taylor: bool, rows: int | None) -> Rows:
    """The rows of a joint test (`joint_screen`): f(θ), with `taylor` each leaf's Taylor
    points, k directions numbered from `first_number` moving the leaves marked in `tested`
    (default all), then padding to `rows` rows."""
    tested_ = np.ones(n_leaves, bool) if tested is None else tested
    numbers = first_number + np.arange(k, dtype=np.int64)
    plan = (Rows.origin(n_leaves, taylor_levels(eps_f) if taylor else None)
            + Rows.joint(numbers, step, tested_))
    return plan + Rows.padding(max(0, (rows or len(plan)) - len(plan)), n_leaves)


def joint_screen(problem: Problem, positions: Sequence[int], leaf_numbers: Sequence[int],
                 param_dynamic: Sequence[Any], arg_dynamic: Sequence[Any],
                 g_leaves: Sequence[np.ndarray | jax.Array], roundings: Sequence[np.ndarray],
                 k: int, seed: int, eps_f: float, rel_step: float, safety: float,
                 paths: Sequence[str], first_number: int = JOINT_NUMBERS,
                 holes: Sequence[tuple[int, int] | None] | None = None,
                 tested: Sequence[bool] | None = None, taylor: bool = False,
                 rows: int | None = None) -> JointScreen:
    """k joint directions over the leaves at `positions` (those marked in `tested`, default
    all), screened at the first step; their numbers from `first_number` on (a second joint
    test takes numbers after the first's, so its signs are independent of them: `fast`'s
    clearing test).

    `holes`: per leaf, None or a flat range (lo, hi) left out of its direction (`fast`: the
    components a search has checked one by one). The Rademacher bound holds for any support,
    so for the errors of every leaf outside its hole together; the holed leaf's entries are
    scaled by c = 1/√(n − (hi − lo)) as in a test of that support alone (`directions`).
    `taylor`: each leaf's Taylor test too, in the same program. `rows`: the program's row
    count (`row_count`), so that a clearing test reuses the first test's program."""
    n_leaves = len(positions)
    tested_ = np.ones(n_leaves, bool) if tested is None else np.asarray(tested, bool)
    numbers = first_number + np.arange(k, dtype=np.int64)
    step = power_of_two(rel_step)
    taylor_steps = taylor_levels(eps_f)
    o = len(Rows.origin(n_leaves, taylor_steps if taylor else None))  # the joint rows' start
    plan = plan_rows(n_leaves, k, first_number, step, eps_f, tested_, taylor, rows)
    hole_of = [None] * n_leaves if holes is None else list(holes)
    f, g_step, gus, spread2 = evaluate_rows(
        problem, positions, leaf_numbers, param_dynamic, arg_dynamic, g_leaves, roundings,
        seed, step, plan, hole_of)
    f0 = float(f[0, 0])
    which = [int(i) for i in np.flatnonzero(tested_)]
    # u·g of the joint directions: the tested leaves' in order, as one sum on the device
    gu = np.zeros(k)
    for i in which:
        gu = gu + gus[o:o + k, i]
    t = np.full(k, step)
    # each value corrected to first order back to the exact point θ ± t·u (`direction_checks`)
    fp = f[o:o + k, 0] - (g_step[o:o + k, 0] - t * gu)
    fm = f[o:o + k, 1] - (g_step[o:o + k, 1] + t * gu)
    a_leaf = HOEFFDING_Z * np.sqrt(spread2[which])
    a_joint = HOEFFDING_Z * np.sqrt(spread2[which].sum())
    screened = v.screen(gu, fp, fm, t, t, f0, eps_f, np.full(k, a_joint), safety)
    # the tolerance each leaf's own first step (at rel_step) would have, with these loss values
    f_scale = np.maximum(abs(f0), np.maximum(np.abs(fp), np.abs(fm)))
    own = safety * (v.roundoff(eps_f, f_scale, rel_step)[:, None] + a_leaf[None, :])
    covered = np.all(screened.tolerance[:, None] <= MAX_LOOSENING * own, axis=0)
    total = sum(int(np.size(g_leaves[i])) for i in which)
    checks = DirectionalChecks(numbers, np.zeros(k, np.int64), np.full(k, total), gu,
                               screened.numerical, screened.tolerance, screened.status,
                               2 * k + 1, joint=tuple(paths[i] for i, c in zip(which, covered)
                                                      if c))
    results: list[tuple[float, TaylorResult]] = []
    if taylor:
        for leaf in range(n_leaves):
            at = plan.moves[:o, :, leaf] == 1   # its Taylor points
            results.append(taylor_result(np.concatenate([[f0], f[:o][at]]),
                                         np.concatenate([[0.0], g_step[:o][at]]),
                                         float(np.sqrt(spread2[leaf])), taylor_steps, eps_f))
    return JointScreen(checks, tuple(int(leaf_numbers[i]) for i, c in zip(which, covered) if c),
                       tuple(results), tuple(which), own, tuple(paths),
                       tuple(int(x) for x in leaf_numbers))


@jax.jit
def _direction_entries(seed, key, numbers, index, theta_at, support):
    """uⱼ of the joint directions `numbers` at the flat `index` of their sign vector, whose
    leaf has θⱼ = `theta_at` there and `support` entries: (numbers, index)."""
    r = signs_at(seed, key, numbers[:, None], index[None, :], theta_at.dtype)
    return r * magnitudes(theta_at, support)[None, :]


def _leaf_entries(x: Any, indices: np.ndarray) -> np.ndarray:
    """The entries `indices` (flat) of the leaf `x`, on the host, read where they live (no
    flat copy of the leaf)."""
    where = np.unravel_index(indices, x.shape)
    devices = x.sharding.device_set if isinstance(x, jax.Array) else set()
    if not devices or (len(devices) == 1 and next(iter(devices)).platform == "cpu"):
        return np.asarray(x)[where]   # read by NumPy: a gather compiles a program per shape
    sharding = x.sharding
    if isinstance(sharding, NamedSharding) and sharded_in_types(x):
        # the gather's own sharding must be named
        return to_host(x.at[where].get(out_sharding=NamedSharding(sharding.mesh,
                                                                   PartitionSpec())))
    return to_host(x[where])


def corrected_screen(screen: JointScreen, positions: Sequence[int],
                     param_dynamic: Sequence[Any], seed: int,
                     blocks: Sequence[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
                     ) -> JointScreen:
    """The first joint test (`screen`, holes none, every leaf tested) with the gradient of each
    block replaced by the numerical derivatives measured there one by one (`blocks`: (leaf i of
    the call, flat indices, their numerical values, tolerances and analytic values)): u·g of
    direction n gains Σⱼ uⱼ·(numericalⱼ − gⱼ) over the blocks, and its tolerance Σⱼ |uⱼ|·
    toleranceⱼ. No loss is evaluated: it is `fast`'s clearing test on the first test's
    points, with every block's error taken out (the argument in `fast`)."""
    numbers = np.asarray(screen.checks.numbers, np.int32)
    shift, slack = np.zeros(numbers.size), np.zeros(numbers.size)
    concatenated = one_vector(positions, param_dynamic)
    sizes = [int(np.size(param_dynamic[p])) for p in positions]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    for i, idx, numerical, tolerance, g in blocks:
        leaf = param_dynamic[positions[i]]
        dtype = np.dtype(leaf.dtype)
        # the signs as `_concatenated` or `_per_leaf` draws them
        key, index = ((CONCATENATED_KEY, offsets[i] + idx) if concatenated
                      else (screen.leaf_numbers[i], idx))
        u = np.asarray(_direction_entries(
            np.asarray(seed, np.uint32), np.asarray(key, np.uint32), numbers,
            np.asarray(index, np.int32), _leaf_entries(leaf, idx).astype(dtype),
            np.asarray(sizes[i], dtype)), np.float64)
        shift += u @ (np.asarray(numerical, np.float64) - np.asarray(g, np.float64))
        slack += np.abs(u) @ np.asarray(tolerance, np.float64)
    return screen.corrected(shift, slack)
