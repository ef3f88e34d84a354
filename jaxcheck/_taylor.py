"""The Taylor test: a scale-free signal of whether g is the gradient along a direction.

For a smooth loss and the true gradient, the remainder R(h) = |f(θ+hu) − f(θ) − h·u·g| is
O(h²): halving h divides it by 4 (order 2). If u·g is wrong by δ, R(h) ≈ |h·δ| + O(h²) and
halving h only halves it once h·|δ| dominates (order 1). The observed order
log(R(h)/R(h/4)) / log 4 needs no tolerance and no knowledge of the loss's scale (Farrell et
al., *Automated derivation of the adjoint of high-level transient finite element programs*, 2013,
§4; dolfin-adjoint's `taylor_test`). It is reported per leaf beside the verdicts, not used for
them: an error much smaller than h·|f''| leaves the order at 2 for every step above round-off.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from . import _differences as d
from ._directional import HOEFFDING_Z
from ._directions import Directions

# Steps t_max·4⁻ʲ, j = 0..4: a factor 256 between the largest and smallest in 5 evaluations
# (each can cost a forward pass; the order needs only two steps above round-off); with f(θ),
# 6 rows, evaluated in pairs (`_directions.STEPS`).
LEVELS = 5
RATIO = 4.0
# A remainder is used only where it is this many times its round-off (the loss values carry
# ~2ε|f| each and the predicted change h·u·g its own rounding).
ABOVE_NOISE = 10.0


@dataclasses.dataclass(frozen=True, eq=False)
class TaylorResult:
    """Remainders R(h) along one direction of a leaf and the orders they show."""

    steps: np.ndarray
    remainders: np.ndarray
    noise: np.ndarray          # round-off level of each remainder

    @property
    def orders(self) -> np.ndarray:
        """log R(hⱼ)/R(hⱼ₊₁) ÷ log hⱼ/hⱼ₊₁ between successive steps (NaN where a remainder is
        at noise)."""
        r, ok = self.remainders, self.remainders > ABOVE_NOISE * self.noise
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.log2(r[:-1] / r[1:]) / np.log2(self.steps[:-1] / self.steps[1:])
        return np.where(ok[:-1] & ok[1:], out, np.nan)

    @property
    def order(self) -> Optional[float]:
        """The order at the smallest pair of steps above round-off; None if there is none."""
        usable = np.flatnonzero(np.isfinite(self.orders))
        return float(self.orders[usable[-1]]) if usable.size else None

    @property
    def consistent(self) -> Optional[bool]:
        """True if the remainder shrinks as h² (or faster), False if as h; None if unknown."""
        order = self.order
        return None if order is None else order > 1.5


def taylor_test(dirs: Directions, number: int, eps_f: float) -> tuple[float, TaylorResult]:
    """The loss at θ, and the remainders along direction `number` of the whole leaf at steps
    ε^(1/5)·4·4⁻ʲ (one `Directions.along` call)."""
    t_max = 4.0 * d.relative_step(eps_f, d.RICHARDSON_EXPONENT)
    steps = t_max / RATIO ** np.arange(LEVELS)
    m = steps.size + 1
    r = dirs.along(np.full(m, number), np.zeros(m, np.int64), np.full(m, dirs.size),
                   np.concatenate([[0.0], steps]))
    f0, f, gd = float(r.f[0]), r.f[1:], r.g_step[1:]
    rounding = HOEFFDING_Z * float(r.spread[0])   # of u·g, as in the directional checks
    remainders = np.abs(f - f0 - gd)
    noise = 4.0 * eps_f * np.maximum(abs(f0), np.abs(f)) + rounding * steps
    return f0, TaylorResult(steps, remainders, noise)
