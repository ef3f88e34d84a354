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
leaf whose probe shows, one more joint test of k + 1 fresh directions, numbered from
`JOINT_NUMBERS + k`, for the others and for each searched leaf without the block it checked
one by one, its direction holed there: `holes`): the joint screen never fails a leaf. A wrong
leaf passes only if the first joint test misses it (≤ 2⁻ᵏ) or, that test failed, what follows
misses it (≤ 2⁻ᵏ: each leaf, and each searched leaf's rest, passes exactly one test of ≥ k fresh
directions: its own test of k, or the second joint test of k + 1 and then, if that fails, its
own test of k + 1 directions or k on each half its search left unverified): ≤ 2·2⁻ᵏ in all
(the argument in `fast`).

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

from ..evaluation import engine
from ..evaluation.directions import (
    VMAP_ENTRIES,
    linear_bound,
    magnitudes,
    power_of_two,
    scales,
    signs,
)
from ..inputs.placement import flat, shaped_like
from ..inputs.problem import Problem
from . import verdicts as v
from .direction_checks import HOEFFDING_Z, DirectionalChecks

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


def _evaluate_joint(problem: Problem, positions: tuple[int, ...], leaves: tuple[int, ...],
                    directions_per_vmap: int, exact: bool, holed: tuple[bool, ...],
                    param_dynamic, arg_dynamic, gs, roundings, holes, seed, numbers, t):
    """f(θ), and per direction (numbers, shape (J,)): the loss at θ ± t·u, g·(P − θ) at each
    point P evaluated, and u·g; and per leaf ‖u_L∘A_L‖², which does not depend on the signs.
    A leaf marked in `holed` has its direction on the whole leaf without the range
    `holes[L]` = (lo, hi) (int32 scalars, dynamic: one program for every hole).

    Where the points are `exact` (`exact_steps`), g·(P − θ) is ±t·u·g: no sum over every
    leaf per point, a pass as costly as building the point."""
    thetas = [flat(param_dynamic[p]) for p in positions]
    zero = jnp.asarray(0, jnp.int32)
    mags = [scales(zero, jnp.asarray(theta.size, jnp.int32), hole[0], hole[1], theta) if h
            else magnitudes(theta, theta.size)
            for theta, h, hole in zip(thetas, holed, holes)]
    total = sum(theta.size for theta in thetas)

    def per_direction(number):
        us = [signs(seed, jnp.uint32(leaf), number, theta.size, theta.dtype) * m
              for leaf, theta, m in zip(leaves, thetas, mags)]
        gu = sum(jnp.sum(u * g) for u, g in zip(us, gs))

        def at(step):
            dynamic = list(param_dynamic)
            points = [theta + step * u for theta, u in zip(thetas, us)]
            for position, point in zip(positions, points):
                dynamic[position] = shaped_like(point, param_dynamic[position])
            g_step = step * gu if exact else sum(
                jnp.sum(g * (point - theta)) for g, point, theta in zip(gs, points, thetas))
            return problem.loss(dynamic, arg_dynamic), g_step

        steps = jnp.stack([t, -t])
        # both points in one vmap for small params; one at a time for large ones (a vmap over
        # perturbed weights turns their products into batched GEMMs, slow on CPU)
        if 2 * total <= VMAP_ENTRIES:
            f, g_step = jax.vmap(at)(steps)
        else:
            f, g_step = jax.lax.map(at, steps)
        return f, g_step, gu

    if directions_per_vmap == 1:  # a plain loop: no vmap of size 1 to compile
        f, g_step, gu = jax.lax.map(per_direction, numbers)
    else:
        f, g_step, gu = jax.lax.map(per_direction, numbers, batch_size=directions_per_vmap)
    spread2 = jnp.stack([jnp.sum((m * linear_bound(g, a)) ** 2)
                         for m, g, a in zip(mags, gs, roundings)])
    return problem.loss(param_dynamic, arg_dynamic), f, g_step, gu, spread2


@dataclasses.dataclass(frozen=True, eq=False)
class JointScreen:
    """The joint test's directional checks, and the leaves it covers (by checked-leaf number)."""

    checks: DirectionalChecks
    covered: tuple[int, ...]

    @property
    def passed(self) -> bool:
        return bool(np.all(self.checks.status == v.PASS))


def joint_screen(problem: Problem, positions: Sequence[int], leaf_numbers: Sequence[int],
                 param_dynamic: Sequence[Any], arg_dynamic: Sequence[Any],
                 g_leaves: Sequence[np.ndarray | jax.Array], roundings: Sequence[np.ndarray],
                 k: int, seed: int, eps_f: float, rel_step: float, safety: float,
                 paths: Sequence[str], first_number: int = JOINT_NUMBERS,
                 holes: Sequence[tuple[int, int] | None] | None = None) -> JointScreen:
    """k joint directions over the leaves at `positions`, screened at the first step; their
    numbers from `first_number` on (a second joint test takes numbers after the first's, so
    its signs are independent of them: `fast`'s clearing test).

    `holes`: per leaf, None or a flat range (lo, hi) left out of its direction (`fast`: the
    components a search has checked one by one). The Rademacher bound holds for any support,
    so for the errors of every leaf outside its hole together; the holed leaf's entries are
    scaled by c = 1/√(n − (hi − lo)) as in a test of that support alone (`directions`)."""
    dtype = np.dtype(param_dynamic[positions[0]].dtype)
    total = sum(int(np.size(g)) for g in g_leaves)
    per_vmap = max(1, min(k, VMAP_ENTRIES // (2 * total)))
    numbers = first_number + np.arange(k, dtype=np.int64)
    step = power_of_two(rel_step)
    t = jnp.asarray(step, dtype)
    hole_of = [None] * len(positions) if holes is None else list(holes)
    sizes = [int(np.size(g)) for g in g_leaves]
    supports = [m if h is None else m - (h[1] - h[0]) for m, h in zip(sizes, hole_of)]
    exact = bool(exact_steps([param_dynamic[p] for p in positions], t,
                             [jnp.asarray(m, dtype) for m in supports]))
    out = engine.call(
        _evaluate_joint, (problem, tuple(positions), tuple(leaf_numbers), per_vmap, exact,
                          tuple(h is not None for h in hole_of)),
        tuple(param_dynamic), tuple(arg_dynamic),
        tuple(jnp.asarray(g.reshape(-1), dtype) for g in g_leaves),
        tuple(jnp.asarray(r, dtype) for r in roundings),
        tuple(tuple(jnp.asarray(x, jnp.int32) for x in (h or (0, 0))) for h in hole_of),
        jnp.asarray(seed, jnp.uint32),
        jnp.asarray(numbers, jnp.int32), t)
    f0, f, g_step, gu, spread2 = (np.asarray(x, np.float64) for x in out)
    f0 = float(f0)
    t = np.full(k, step)
    # each value corrected to first order back to the exact point θ ± t·u (`direction_checks`)
    fp = f[:, 0] - (g_step[:, 0] - t * gu)
    fm = f[:, 1] - (g_step[:, 1] + t * gu)
    a_leaf = HOEFFDING_Z * np.sqrt(spread2)
    a_joint = HOEFFDING_Z * np.sqrt(spread2.sum())
    screened = v.screen(gu, fp, fm, t, t, f0, eps_f, np.full(k, a_joint), safety)
    # the tolerance each leaf's own first step (at rel_step) would have, with these loss values
    f_scale = np.maximum(abs(f0), np.maximum(np.abs(fp), np.abs(fm)))
    own = safety * (v.roundoff(eps_f, f_scale, rel_step)[:, None] + a_leaf[None, :])
    covered = np.all(screened.tolerance[:, None] <= MAX_LOOSENING * own, axis=0)
    checks = DirectionalChecks(numbers, np.zeros(k, np.int64), np.full(k, total), gu,
                               screened.numerical, screened.tolerance, screened.status,
                               2 * k + 1, joint=tuple(p for p, c in zip(paths, covered) if c))
    return JointScreen(checks, tuple(int(n) for n, c in zip(leaf_numbers, covered) if c))
