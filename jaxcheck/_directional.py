"""Directional checks: u·g against the derivative of the loss along u, with full mode's error model.

A direction is treated exactly like a component in full mode (`_verdicts.screen`, then
`_verdicts.judge` with Richardson levels and the kink analysis), with these quantities:

- analytic value u·g; numerical value (f(θ+tu) − f(θ−tu))/2t at t = ε^(1/3), then at the
  Richardson levels ε^(1/5)·(1, 1/2, 1/4) where the first step is not already within round-off;
- the points θ ± tu are rounded to the working dtype; each loss value is corrected to first
  order back to the exact point, f(θ+tu) ≈ f(P) − g·(P − θ − tu) (a change of order ε·|u·g|),
  so the difference quotients estimate the derivative along u itself;
- the gradient's own rounding enters as 2·‖u∘A‖, where Aᵢ is full mode's bound on the rounding of
  gᵢ: with random signs, |Σ uᵢ errᵢ| exceeds z·‖u∘err‖ with probability ≤ 2·exp(−z²/2)
  (Hoeffding), and times the safety factor 3 this is z = 6 (≤ 3e-8 per direction).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from . import _differences as d
from . import _verdicts as v
from ._directions import Directions
from ._report import relative_difference

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
    u_sum: Optional[np.ndarray] = None   # Σ uᵢ: the entry of u where a range has one component
    joint: tuple[str, ...] = ()   # paths of the leaves a joint test covers (`_joint`)

    @property
    def k(self) -> int:
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


def check_directions(dirs: Directions, f0: float, numbers: np.ndarray, lo: np.ndarray,
                     hi: np.ndarray, eps_f: float, rel_step: float, safety: float,
                     analytic_at=None) -> DirectionalChecks:
    """Directional verdicts for directions `numbers` on the ranges `[lo, hi)` (arrays).

    `analytic_at(point)` returns the leaf's analytic gradient (flat) with the leaf at `point`;
    it is used only where a kink must be confirmed beside θ, as in full mode.
    """
    start = dirs.evaluations
    numbers, lo, hi = (np.asarray(x) for x in (numbers, lo, hi))
    k = numbers.size

    def differences(t: np.ndarray, rows: np.ndarray):
        """Loss at θ ± t·u for directions `rows`, corrected to the exact points; and u·g."""
        n_, l_, h_ = numbers[rows], lo[rows], hi[rows]
        r = dirs.along(np.concatenate([n_, n_]), np.concatenate([l_, l_]),
                       np.concatenate([h_, h_]), np.concatenate([t, -t]))
        m = rows.size
        gu = r.gu[:m]
        fp = r.f[:m] - (r.g_step[:m] - t * gu)
        fm = r.f[m:] - (r.g_step[m:] + t * gu)
        return fp, fm, r

    t1 = np.full(k, rel_step)
    fp, fm, first = differences(t1, np.arange(k))
    gu, a, u_sum = first.gu[:k], HOEFFDING_Z * first.spread[:k], first.u_sum[:k]
    screened = v.screen(gu, fp, fm, t1, t1, f0, eps_f, a, safety)
    status, numerical, tolerance = (screened.status.copy(), screened.numerical.copy(),
                                    screened.tolerance.copy())

    todo = np.flatnonzero(status != v.PASS)
    if todo.size:
        rel2 = d.relative_step(eps_f, d.RICHARDSON_EXPONENT)
        levels = [np.full(todo.size, rel2 / 2.0**j) for j in range(d.RICHARDSON_LEVELS)]
        fps, fms, _ = zip(*(differences(t, todo) for t in levels))
        h = np.stack(levels)
        judged, kinks = v.judge(gu[todo], f0, np.stack(fps), np.stack(fms), h, h, eps_f,
                                a[todo], safety, np.full(todo.size, rel_step))
        status[todo], numerical[todo], tolerance[todo] = (judged.status, judged.numerical,
                                                          judged.tolerance)
        if analytic_at is not None:
            confirmed = _confirm_kinks(dirs, numbers[todo], lo[todo], hi[todo], kinks,
                                       analytic_at)
            status[todo[confirmed]] = v.INCONCLUSIVE
    return DirectionalChecks(numbers, lo, hi, gu, numerical, tolerance, status,
                             dirs.evaluations - start, u_sum)


def _confirm_kinks(dirs: Directions, numbers, lo, hi, kinks: v.Kinks, analytic_at) -> np.ndarray:
    """Mask of unresolved kinks where u·g just beside θ (on either side) matches the slopes."""
    confirmed = np.zeros(kinks.unresolved.shape, bool)
    theta = np.asarray(dirs.theta)
    for j in np.flatnonzero(kinks.unresolved):
        u = dirs.vector(int(numbers[j]), int(lo[j]), int(hi[j]))
        beta = float(kinks.step[j])
        right = float(np.sum(analytic_at(theta + beta * u) * u))
        left = float(np.sum(analytic_at(theta - beta * u) * u))
        one = dataclasses.replace(kinks, right=kinks.right[j:j + 1], left=kinks.left[j:j + 1],
                                  tolerance=kinks.tolerance[j:j + 1])
        confirmed[j] = bool(v.confirm_beside_kink(one, np.array([right]), np.array([left]))[0])
    return confirmed
