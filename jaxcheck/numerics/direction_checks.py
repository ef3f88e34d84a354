"""Directional checks: u·g against the derivative of the loss along u, with full mode's error model.

A direction is decided exactly like a component in full mode, by the same code
(`escalation.decide`: the screen, the measured noise, Richardson levels at two scales, the
one-sided estimates and the kink analysis), with these quantities:

- analytic value u·g; numerical value (f(θ+tu) − f(θ−tu))/2t at t = ε^(1/3), then at the
  levels 4t, 2t, t and ε^(1/5)·(1, 1/2, 1/4) where the first step is not already within
  round-off;
- the points θ ± tu are rounded to the working dtype; each loss value is corrected to first
  order back to the exact point, f(θ+tu) ≈ f(P) − g·(P − θ − tu) (a change of order ε·|u·g|),
  so the difference quotients estimate the derivative along u itself;
- the gradient's own rounding enters as 2·‖u∘A‖, where Aᵢ is full mode's bound on the rounding of
  gᵢ: with random signs, |Σ uᵢ errᵢ| exceeds z·‖u∘err‖ with probability ≤ 2·exp(−z²/2)
  (Hoeffding), and times the safety factor 3 this is z = 6 (≤ 3e-8 per direction).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ..evaluation.directions import Directions
from ..inputs.placement import to_host
from . import differences as d
from . import verdicts as v
from .escalation import NOISE_SAMPLES, Level, decide
from .results import relative_difference

HOEFFDING_Z = 2.0


@dataclasses.dataclass(frozen=True, eq=False)
class DirectionalChecks:
    """Verdicts of directional derivatives: one entry per (direction, index range)."""

    numbers: np.ndarray       # direction numbers (the seed of their signs)
    lo: np.ndarray            # each direction is supported on flat indices [lo, hi)
    hi: np.ndarray
    analytic: np.ndarray      # u·g
    numerical: np.ndarray     # derivative of the loss along u, by differences
    tolerance: np.ndarray
    status: np.ndarray        # PASS / INCONCLUSIVE / FAIL per direction
    evaluations: int = 0      # loss evaluations spent
    u_sum: np.ndarray | None = None   # Σ uᵢ: the entry of u where a range has one component
    joint: tuple[str, ...] = ()   # paths of the leaves a joint test covers (`joint`)
    noise: float = 0.0            # f's rounding noise measured near θ (0: not needed)
    hole_lo: np.ndarray | None = None  # each range without [hole_lo, hole_hi) (None: no hole)
    hole_hi: np.ndarray | None = None
    # directions drawn but left undecided once one had FAILed (`check_directions(...,
    # until_fail=True)`): not part of the verdict, and not in the arrays above
    undecided: int = 0

    @property
    def k(self) -> int:
        """Directions decided (the arrays' length); `undecided` more were drawn."""
        return int(self.status.size)

    @property
    def n_fail(self) -> int:
        return int(np.sum(self.status == v.FAIL))

    @property
    def n_inconclusive(self) -> int:
        return int(np.sum(self.status == v.INCONCLUSIVE))

    @property
    def relative_difference(self) -> float:
        m = self.status != v.INCONCLUSIVE
        return relative_difference(self.analytic[m], self.numerical[m])


class DirectionLine:
    """The lines θ + t·u along directions `numbers` on ranges `[lo, hi)` without the holes
    `[hole_lo, hole_hi)` (an `escalation.Line`). Each loss value is corrected to first order
    to the exact point θ + t·u, so the offsets taken are the offsets asked for."""

    def __init__(self, dirs: Directions, numbers: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                 analytic_at: Callable[[np.ndarray], np.ndarray] | None = None,
                 hole_lo: np.ndarray | None = None, hole_hi: np.ndarray | None = None):
        self.dirs, self.numbers, self.lo, self.hi = dirs, numbers, lo, hi
        no_hole = np.zeros_like(lo)
        self.hole_lo = no_hole if hole_lo is None else hole_lo
        self.hole_hi = no_hole if hole_hi is None else hole_hi
        self.analytic_at = analytic_at

    def take(self, rows: np.ndarray) -> DirectionLine:
        """The lines `rows` of this one (rows 0..len(rows)−1 of the result)."""
        return DirectionLine(self.dirs, self.numbers[rows], self.lo[rows], self.hi[rows],
                             self.analytic_at, self.hole_lo[rows], self.hole_hi[rows])

    def along(self, rows: np.ndarray, t: np.ndarray):
        """`Directions.along` for `rows` at steps t, and the corrected loss values."""
        r = self.dirs.along(self.numbers[rows], self.lo[rows], self.hi[rows], t,
                            self.hole_lo[rows], self.hole_hi[rows])
        return r, r.f - (r.g_step - t * r.gu)

    def losses(self, rows: np.ndarray, offsets: np.ndarray,
               strict: bool = True) -> tuple[np.ndarray, np.ndarray]:
        # non-finite values are returned either way: a direction's verdict is refined only in
        # native precision (`check_directions(..., sharp=True)`), where a non-finite value
        # leaves the weak PASS as it was, and its other steps are those full mode takes
        return self.along(rows, offsets)[1], np.asarray(offsets, np.float64)

    def slopes(self, rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        # one gradient per row: only where a kink is to be confirmed, rare
        theta = to_host(self.dirs.theta)
        out = np.empty(len(rows))
        for k, (row, t) in enumerate(zip(rows, offsets)):
            u = self.dirs.vector(int(self.numbers[row]), int(self.lo[row]), int(self.hi[row]),
                                 (int(self.hole_lo[row]), int(self.hole_hi[row])))
            assert self.analytic_at is not None, "kinks are confirmed only with analytic_at"
            out[k] = float(np.sum(self.analytic_at(theta + t * u) * u))
        return out


def _first_pass(line: DirectionLine, rel_step: float):
    """θ ± t·u at t = rel_step along every direction of `line`, and the analytic side."""
    k = line.numbers.size
    t1 = np.full(k, rel_step)
    rows = np.arange(k)
    first, f = line.along(np.concatenate([rows, rows]), np.concatenate([t1, -t1]))
    return Level(f[:k], f[k:], t1, t1), first


def roundoff_margins(dirs: Directions, f0: float, numbers: np.ndarray, lo: np.ndarray,
                     hi: np.ndarray, eps_f: float, rel_step: float,
                     safety: float) -> tuple[np.ndarray, np.ndarray]:
    """Per direction, its first central difference minus u·g, and the round-off tolerance of
    the screen of `escalation.decide` (2 evaluations a direction): where to look, not a
    verdict (`outside_roundoff`)."""
    numbers, lo, hi = (np.asarray(x) for x in (numbers, lo, hi))
    level, first = _first_pass(DirectionLine(dirs, numbers, lo, hi), rel_step)
    k = numbers.size
    screened = v.screen(first.gu[:k], level.f_plus, level.f_minus, level.h_plus, level.h_minus,
                        f0, eps_f, HOEFFDING_Z * first.spread[:k], safety)
    return screened.numerical - first.gu[:k], screened.tolerance


def outside_roundoff(dirs: Directions, f0: float, numbers: np.ndarray, lo: np.ndarray,
                     hi: np.ndarray, eps_f: float, rel_step: float,
                     safety: float) -> np.ndarray:
    """Per direction, whether its first central difference is outside round-off of u·g (the
    screen of `escalation.decide` alone, 2 evaluations a direction).

    Not a verdict: a direction within round-off would PASS, but one outside may still pass
    once the noise is measured. Fast mode uses it only to choose where to look next."""
    diff, tol = roundoff_margins(dirs, f0, numbers, lo, hi, eps_f, rel_step, safety)
    return ~(np.abs(diff) <= tol)


def check_directions(dirs: Directions, f0: float, numbers: np.ndarray, lo: np.ndarray,
                     hi: np.ndarray, eps_f: float, rel_step: float, safety: float,
                     analytic_at=None, noise: float | None = None,
                     hole: tuple[np.ndarray, np.ndarray] | None = None,
                     until_fail: bool = False, sharp: bool = False) -> DirectionalChecks:
    """Directional verdicts for directions `numbers` on the ranges `[lo, hi)` (arrays), by
    `escalation.decide` as for components; `hole`: (hole_lo, hole_hi) arrays, each range
    without `[hole_lo, hole_hi)` (inside it, or empty).

    `analytic_at(point)` returns the leaf's analytic gradient (flat) with the leaf at `point`;
    it is used only where a kink must be confirmed beside θ, as in full mode. `noise`: f's
    rounding noise near θ if already measured (`DirectionalChecks.noise`).

    `until_fail`: the test stops at its first confirmed FAIL. The directions outside round-off
    at the first step are escalated a few at a time (`escalation.decide`); and where the noise
    is still to be measured, the first `NOISE_SAMPLES` directions are evaluated first: if all
    of them are outside round-off, the noise is measured on them (as it would be on all) and
    they are escalated before the others are evaluated at all. The result holds only the
    directions decided, with the count of the others in `undecided`: a FAIL is reported only
    when confirmed, and the test passes only when every direction was decided.

    `sharp` (native precision): a weak PASS is refined by Ridders' extrapolation, as a
    component's is (`escalation.decide(..., sharp=True)`); in float32 the first step's
    round-off alone would pass a whole leaf's gradient a relative 1e-4 off.
    """
    start = dirs.evaluations
    numbers, lo, hi = (np.asarray(x) for x in (numbers, lo, hi))
    k = numbers.size
    hole_lo, hole_hi = (None, None) if hole is None else (np.asarray(x) for x in hole)
    line = DirectionLine(dirs, numbers, lo, hi, analytic_at, hole_lo, hole_hi)
    finest = np.full(k, d.relative_step(eps_f, d.RICHARDSON_EXPONENT)
                     / 2.0 ** (d.RICHARDSON_LEVELS - 1))
    status, numerical, tolerance = (np.zeros(k, np.int8), np.zeros(k), np.zeros(k))
    gu, a, u_sum = np.zeros(k), np.zeros(k), np.zeros(k)
    decided = np.zeros(k, bool)

    def run(rows: np.ndarray, noise: float | None, first_pass=None):
        """First pass (unless given) and `decide` for `rows`, into the arrays above."""
        sub = line.take(rows)
        level, first = first_pass if first_pass is not None else _first_pass(sub, rel_step)
        m = rows.size
        gu[rows], a[rows] = first.gu[:m], HOEFFDING_Z * first.spread[:m]
        u_sum[rows] = first.u_sum[:m]
        decision = decide(sub, gu[rows], a[rows], f0, level, finest[rows], eps_f, safety,
                          noise, refine=sharp, until_fail=until_fail, sharp=sharp)
        verdicts = decision.verdicts
        status[rows], numerical[rows] = verdicts.status, verdicts.numerical
        tolerance[rows] = verdicts.tolerance
        done = np.ones(m, bool)
        done[decision.left] = False
        decided[rows[done]] = True
        return decision.noise

    rows = np.arange(k)
    head = NOISE_SAMPLES
    if until_fail and noise is None and k > 2 * head:
        level, first = _first_pass(line.take(rows[:head]), rel_step)
        outside = v.screen(first.gu[:head], level.f_plus, level.f_minus, level.h_plus,
                           level.h_minus, f0, eps_f, HOEFFDING_Z * first.spread[:head],
                           safety).status == v.FAIL
        if np.all(outside):   # the noise measured on them, as on all k
            noise = run(rows[:head], None, (level, first))
            if not np.any(status[rows[:head]] == v.FAIL):
                noise = run(rows[head:], noise)
        else:   # decided with the others, their first pass reused
            rest_level, rest_first = _first_pass(line.take(rows[head:]), rel_step)
            both = (level, rest_level)
            merged = Level(*(np.concatenate([getattr(x, f) for x in both])
                             for f in ("f_plus", "f_minus", "h_plus", "h_minus")))
            noise = run(rows, None, (merged, _Head(*(
                np.concatenate([getattr(first, f)[:head], getattr(rest_first, f)[:k - head]])
                for f in ("gu", "spread", "u_sum")))))
    else:
        noise = run(rows, noise)
    keep = decided
    if hole_lo is not None and hole_hi is not None:
        hole_lo, hole_hi = hole_lo[keep], hole_hi[keep]
    return DirectionalChecks(numbers[keep], lo[keep], hi[keep], gu[keep], numerical[keep],
                             tolerance[keep], status[keep], dirs.evaluations - start,
                             u_sum[keep], noise=float(noise or 0.0), hole_lo=hole_lo,
                             hole_hi=hole_hi, undecided=int(k - keep.sum()))


class _Head(NamedTuple):
    """The analytic side of a first pass, one entry per direction."""

    gu: np.ndarray
    spread: np.ndarray
    u_sum: np.ndarray
