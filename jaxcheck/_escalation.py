"""Escalation: every step a derivative goes through before it may FAIL, whatever the mode.

A derivative here is the slope of the loss along a line through θ: along one component (full
and sample mode, the entries fast mode localises) or along a random direction (fast mode).
Every mode decides through `decide`, so no mode fails what another would pass:

1. **Screen.** One central difference at the first step h₁; PASS within round-off
   (`_verdicts.screen`). Most derivatives stop here.
2. **Noise.** For what is left, the rounding noise of f near θ is measured (Moré & Wild: the
   6th difference of 7 closely spaced values): a loss whose terms cancel carries ε·Σ|terms| of
   rounding, far more than the ε·|f| the screen assumes.
3. **Richardson at the small scale.** Levels 4h₁, 2h₁, h₁ (h₁ reused), judged by the error
   model with the measured noise, the one-sided estimates and the kink analysis
   (`_verdicts.judge`).
4. **Richardson at the extrapolation scale.** Levels h₂, h₂/2, h₂/4 with h₂ ≈ ε^(1/5) (steps
   a kink at the small scale does not reach, truncation an extrapolation removes), for what is
   still failing, unless the mismatch is gross with no sign of a kink.

At each scale an unresolved kink (the analytic value outside the one-sided slopes) is
confirmed beside θ: if the analytic derivative just right and left of θ matches the slopes
there, θ sits on a kink and the derivative is INCONCLUSIVE. A derivative FAILs only if it
fails at every scale tried.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Protocol

import numpy as np

from . import _differences as d
from . import _verdicts as v

# |analytic − numerical| beyond this many tolerances, with no jump in slope, is a bug at any
# scale: no need to try larger steps.
GROSS_EXCESS = 100.0
NOISE_SAMPLES = 4  # lines whose neighbourhood is sampled for the noise estimate


class Line(Protocol):
    """Loss evaluations along a set of lines through θ (rows 0..m−1)."""

    def losses(self, rows: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """f at θ + offsets[k] along line rows[k] (float64), and the offsets actually taken
        (signed: a component's point is rounded to the working dtype)."""

    def slopes(self, rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """The analytic derivative along line rows[k] at θ + offsets[k]."""


@dataclasses.dataclass(frozen=True)
class Level:
    """Loss values at θ ± h along some lines, with the exact steps taken."""

    f_plus: np.ndarray
    f_minus: np.ndarray
    h_plus: np.ndarray
    h_minus: np.ndarray

    def take(self, where: np.ndarray) -> "Level":
        return Level(self.f_plus[where], self.f_minus[where], self.h_plus[where],
                     self.h_minus[where])

    @property
    def step(self) -> np.ndarray:
        return 0.5 * (self.h_plus + self.h_minus)


def central_levels(line: Line, rows: np.ndarray, steps: list[np.ndarray]) -> list[Level]:
    """θ ± h along `rows` for each array h in `steps`, in one call of `line.losses`."""
    m = rows.size
    offsets = np.concatenate([np.concatenate([h, -h]) for h in steps])
    f, taken = line.losses(np.tile(rows, 2 * len(steps)), offsets)
    f, taken = f.reshape(len(steps), 2, m), taken.reshape(len(steps), 2, m)
    return [Level(f[k, 0], f[k, 1], taken[k, 0], -taken[k, 1]) for k in range(len(steps))]


def measure_noise(line: Line, rows: np.ndarray, f0: float, step: np.ndarray) -> float:
    """Standard deviation of f's rounding noise near θ, from up to `NOISE_SAMPLES` of `rows`
    (`step`: their first steps); 0 if `rows` is empty."""
    if rows.size == 0:
        return 0.0
    pick = np.unique(np.linspace(0, rows.size - 1, NOISE_SAMPLES).astype(int))
    where, h = rows[pick], step[pick]
    k = np.arange(1, d.NOISE_ORDER + 1)
    offsets = (d.NOISE_STEP * h[:, None]) * k[None, :]
    out, _ = line.losses(np.repeat(where, d.NOISE_ORDER), offsets.reshape(-1))
    values = np.concatenate([np.full((where.size, 1), f0), out.reshape(where.size, -1)], 1)
    return d.noise_level(values)


@dataclasses.dataclass(frozen=True, eq=False)
class Decision:
    verdicts: v.ComponentVerdicts
    noise: float            # the noise measured (or given); 0 if none was needed


def decide(line: Line, g: np.ndarray, a: np.ndarray, f0: float, first: Level,
           extrapolation_step: np.ndarray, eps_f: float, safety: float,
           noise: Optional[float] = None) -> Decision:
    """Verdicts of the derivatives along every line of `line` (rows 0..m−1).

    **Arguments:**

    - `g`: the analytic derivatives; `a`: the bound on their rounding.
    - `f0`: f(θ); `first`: the first pass, θ ± h₁ along every line.
    - `extrapolation_step`: the finest step h₂/4 of the last scale, per line.
    - `noise`: f's rounding noise if already measured near θ (else measured here if needed).
    """
    screened = v.screen(g, first.f_plus, first.f_minus, first.h_plus, first.h_minus, f0,
                        eps_f, a, safety)
    status, numerical, tolerance = (screened.status.copy(), screened.numerical.copy(),
                                    screened.tolerance.copy())
    undecided = np.flatnonzero(status == v.FAIL)
    beside = first.step
    if noise is None:
        noise = measure_noise(line, undecided, f0, beside[undecided])
    n_levels = d.RICHARDSON_LEVELS
    scales = (
        # the first step reused as the finest level
        lambda todo: central_levels(line, todo, [beside[todo] * 2.0 ** (n_levels - 1 - k)
                                                 for k in range(n_levels - 1)])
        + [first.take(todo)],
        lambda todo: central_levels(line, todo, [extrapolation_step[todo]
                                                 * 2.0 ** (n_levels - 1 - k)
                                                 for k in range(n_levels)]),
    )
    for evaluate_levels in scales:
        if undecided.size == 0:
            break
        levels = evaluate_levels(undecided)
        stack = lambda name: np.stack([getattr(lv, name) for lv in levels])  # noqa: E731
        judged, kinks = v.judge(g[undecided], f0, stack("f_plus"), stack("f_minus"),
                                stack("h_plus"), stack("h_minus"), eps_f, a[undecided],
                                safety, beside[undecided], noise)
        judged_status = judged.status.copy()
        judged_status[_confirmed_beside_kinks(line, undecided, kinks)] = v.INCONCLUSIVE
        status[undecided] = judged_status
        numerical[undecided], tolerance[undecided] = judged.numerical, judged.tolerance
        excess = np.abs(judged.numerical - g[undecided]) / judged.tolerance
        retry = (judged_status == v.FAIL) & ((excess < GROSS_EXCESS) | kinks.unresolved)
        undecided = undecided[retry]
    return Decision(v.ComponentVerdicts(status, numerical, tolerance), float(noise or 0.0))


def _confirmed_beside_kinks(line: Line, rows: np.ndarray, kinks: v.Kinks) -> np.ndarray:
    """Mask of unresolved kinks where the analytic slope beside θ matches the one-sided ones."""
    confirmed = np.zeros(kinks.unresolved.shape, bool)
    where = np.flatnonzero(kinks.unresolved)
    if where.size == 0:
        return confirmed
    step = kinks.step[where]
    slopes = line.slopes(np.concatenate([rows[where], rows[where]]), np.concatenate([step, -step]))
    sub = dataclasses.replace(kinks, right=kinks.right[where], left=kinks.left[where],
                              tolerance=kinks.tolerance[where])
    confirmed[where] = v.confirm_beside_kink(sub, slopes[:where.size], slopes[where.size:])
    return confirmed
