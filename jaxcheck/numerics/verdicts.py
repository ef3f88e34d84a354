"""The error model: from loss values at perturbed points to PASS / INCONCLUSIVE / FAIL.

A component FAILs only when the analytic value lies outside the numerical estimate's own
error bound, `safety · (truncation + round-off + analytic rounding)`:

- round-off of a difference quotient ≈ ε_f·|f|/h (ε_f: machine epsilon of the least precise
  dtype the loss is computed in, |f|: the loss's magnitude near the component);
- truncation is measured, not assumed: the spread between Richardson levels h, h/2, h/4;
- the analytic gradient carries its own rounding, ≈ ε_g·(|gᵢ| + ‖g_leaf‖).

A first pass at one small step accepts every component already inside its round-off bound
(most of them), so the extra Richardson levels are spent only where they are needed.

Kinks: a piecewise-smooth loss has one-sided slopes that do not converge to each other as
h → 0. Where the smooth model fails, the one-sided differences are inspected; if they show
such a jump and the analytic value lies between them (a valid subgradient, e.g. relu'(0)=0),
the component is INCONCLUSIVE rather than FAIL.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from . import differences as d

PASS, INCONCLUSIVE, FAIL = 0, 1, 2
STATUS_NAMES = ("PASS", "INCONCLUSIVE", "FAIL")

# A loss value carries up to ~2ε|f| of rounding (a reduction's error grows with its length,
# but slowly for pairwise sums); the difference of two such values over 2h gives ~2ε|f|/h.
ROUNDOFF_FACTOR = 2.0
ANALYTIC_ROUNDING_FACTOR = 4.0
# Smooth functions halve F(h) − B(h) (= h·f'' + O(h³)) when h halves; a deviation beyond
# this fraction of |F − B| means the one-sided slopes have a jump between them.
JUMP_TOLERANCE = 0.25


@dataclasses.dataclass(frozen=True, eq=False)
class ComponentVerdicts:
    status: np.ndarray      # int8, PASS / INCONCLUSIVE / FAIL
    numerical: np.ndarray   # best numerical estimate of each derivative
    tolerance: np.ndarray   # bound on |analytic − numerical| for a PASS


def roundoff(eps_f: float, f_scale: np.ndarray, h: np.ndarray | float) -> np.ndarray:
    return ROUNDOFF_FACTOR * eps_f * f_scale / h


def analytic_rounding(eps_g: float, g: np.ndarray, eps_out: float = 0.0) -> np.ndarray:
    """Rounding carried by the analytic gradient: its arithmetic in precision `eps_g`, plus
    the final rounding of each entry to an output dtype of precision `eps_out` (≤ ε/2·|gᵢ|).
    `g` may be a NumPy or a JAX array (then computed on its device)."""
    slope, offset = analytic_rounding_coefficients(eps_g, g, eps_out)
    return slope * abs(g) + offset


def analytic_rounding_coefficients(eps_g: float, g: Any, eps_out: float = 0.0,
                                   norm: bool = False) -> tuple:
    """`analytic_rounding` as (slope, offset), Aᵢ = slope·|gᵢ| + offset: two numbers per
    leaf instead of an array the size of the leaf (fast mode's programs form Aᵢ where they
    use it, `directions.linear_bound`). With `norm`, `g` is the leaf's norm ‖g‖."""
    g_norm = g if norm else (g * g).sum() ** 0.5
    return (ANALYTIC_ROUNDING_FACTOR * eps_g + eps_out,
            ANALYTIC_ROUNDING_FACTOR * eps_g * g_norm)


def screen(g, f_plus, f_minus, h_plus, h_minus, f0, eps_f, a, safety) -> ComponentVerdicts:
    """One central difference per component; PASS where it is within round-off of `g`.

    Components not passed here are not failed: they are left to `judge` (status FAIL here
    only marks them as undecided).
    """
    numerical = d.central(f_plus, f_minus, h_plus, h_minus)
    f_scale = np.maximum(np.abs(f0), np.maximum(np.abs(f_plus), np.abs(f_minus)))
    tol = safety * (roundoff(eps_f, f_scale, 0.5 * (h_plus + h_minus)) + a)
    ok = np.abs(numerical - g) <= tol
    return ComponentVerdicts(np.where(ok, PASS, FAIL).astype(np.int8), numerical, tol)


@dataclasses.dataclass(frozen=True, eq=False)
class Kinks:
    """One-sided slopes of the components where a jump in slope was seen.

    `unresolved` marks jumps where `g` is not between the slopes; there the analytic gradient
    is checked just beside the kink (`confirm_beside_kink`).
    """

    unresolved: np.ndarray
    right: np.ndarray
    left: np.ndarray
    tolerance: np.ndarray
    step: np.ndarray        # how far beside θ the analytic gradient is to be evaluated


def judge(g, f0, f_plus, f_minus, h_plus, h_minus, eps_f, a, safety,
          beside_step, noise: float = 0.0) -> tuple[ComponentVerdicts, Kinks]:
    """Verdicts from central differences at Richardson levels (arrays of shape (levels, m)).

    `noise` is a measured standard deviation of f's rounding noise: a loss whose terms cancel
    carries ε·Σ|terms| of rounding, far more than ε·|f|.
    """
    f_scale = np.maximum(np.abs(f0), np.maximum(np.abs(f_plus), np.abs(f_minus)).max(0))
    f_scale = np.maximum(f_scale, noise / eps_f)
    h = 0.5 * (h_plus + h_minus)
    r = roundoff(eps_f, f_scale, h)
    D = d.central(f_plus, f_minus, h_plus, h_minus)
    F = d.forward(f0, f_plus, h_plus)
    B = d.backward(f0, f_minus, h_minus)
    # Candidate estimates, each with an error bound from the spread of its own levels; each
    # component uses the tightest. Central ones win on smooth functions; when a kink lies
    # within the steps on one side only, the one-sided estimate of the clean side wins.
    estimates = [
        (d.richardson(D[-2], D[-1]),                      # O(h⁴)
         np.abs(d.richardson(D[-2], D[-1]) - d.richardson(D[-3], D[-2])) + 1.5 * r[-1]),
        # O(h²): its error is about the last change, and no less than the change before it
        # over the rate 4 a smooth function shows (a kink crossed between the coarser levels
        # can make the last two agree by chance)
        (D[-1], np.maximum(np.abs(D[-1] - D[-2]), np.abs(D[-2] - D[-3]) / 4.0) + r[-1]),
    ]
    for S in (F, B):                                      # O(h²) after one extrapolation
        s_fine, s_coarse = d.richardson(S[-2], S[-1], 1), d.richardson(S[-3], S[-2], 1)
        estimates.append((s_fine, np.abs(s_fine - s_coarse) + 6.0 * r[-1]))
    values = np.stack([e for e, _ in estimates])
    bounds = safety * (np.stack([b for _, b in estimates]) + a)
    best = np.argmin(bounds, axis=0)
    pick = lambda x: np.take_along_axis(x, best[None], 0)[0]  # noqa: E731
    numerical, tol = pick(values), pick(bounds)
    smooth_ok = np.abs(numerical - g) <= tol

    between, kinks = _kinks(g, F, B, h, r, a, safety, beside_step)
    status = np.where(smooth_ok, PASS, np.where(between, INCONCLUSIVE, FAIL))
    kinks = dataclasses.replace(kinks, unresolved=kinks.unresolved & ~smooth_ok)
    return ComponentVerdicts(status.astype(np.int8), numerical, tol), kinks


def _kinks(g, F, B, h, r, a, safety, beside_step) -> tuple[np.ndarray, Kinks]:
    """Where the loss has a jump in slope near θ, and whether `g` lies between the slopes
    F (forward) and B (backward differences, arrays of shape (levels, m))."""
    J = F - B                       # h·f'' for smooth f; the slope jump at a kink
    noise = 2.0 * r                 # J combines three noisy values over h
    jumps = np.zeros(g.shape, bool)
    for k in range(J.shape[0] - 1):
        deviation = np.abs(J[k + 1] - 0.5 * J[k])
        jumps |= deviation > JUMP_TOLERANCE * np.abs(J[k]) + noise[k + 1] + 0.5 * noise[k]
    # J(h) = jump + h·f'' near a kink at θ: the jump 2J(h/2) − J(h) is then the same from
    # every pair of levels, where a smooth f gives O(h³) terms that shrink 8x per halving.
    # This sees a jump that the curvature term hides at large steps (float32's).
    jump = 2.0 * J[1:] - J[:-1]
    if jump.shape[0] >= 2:
        steady = np.abs(jump[-1] - jump[-2]) <= JUMP_TOLERANCE * np.maximum(np.abs(jump[-1]),
                                                                            np.abs(jump[-2]))
        jumps |= steady & (np.abs(jump[-1]) > 2.0 * (2.0 * noise[-1] + noise[-2]))
    # One-sided slopes extrapolated to h → 0 (O(h) error removed), with their spread.
    right, left = d.richardson(F[-2], F[-1], 1), d.richardson(B[-2], B[-1], 1)
    spread = np.maximum(np.abs(right - d.richardson(F[-3], F[-2], 1)),
                        np.abs(left - d.richardson(B[-3], B[-2], 1)))
    # How much a one-sided slope can change within `beside_step` of θ (curvature · step).
    drift = beside_step * 2.0 * np.maximum(np.abs(F[-2] - F[-1]), np.abs(B[-2] - B[-1])) / h[-1]
    margin = safety * (spread + 4.0 * r[-1] + a + drift)
    lo = np.minimum(np.minimum(right, left), np.minimum(F[-1], B[-1])) - margin
    hi = np.maximum(np.maximum(right, left), np.maximum(F[-1], B[-1])) + margin
    between = jumps & (g >= lo) & (g <= hi)
    return between, Kinks(jumps & ~between, right, left, margin, beside_step)


def confirm_beside_kink(kinks: Kinks, g_right: np.ndarray, g_left: np.ndarray) -> np.ndarray:
    """True where the analytic gradient just right and left of the kink matches the slopes.

    Several kinks can meet at θ (a ReLU unit at exactly 0 for many samples): a per-unit
    convention such as relu'(0)=0 is then a valid subgradient that need not lie between the
    one-sided slopes of the sum. The gradient code is still testable on either side of θ,
    where the loss is smooth and its derivative is the one-sided slope.
    """
    return ((np.abs(g_right - kinks.right) <= kinks.tolerance)
            & (np.abs(g_left - kinks.left) <= kinks.tolerance))
