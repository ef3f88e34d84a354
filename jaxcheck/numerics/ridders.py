"""Ridders' extrapolation with a measured noise floor: the sharpest real-step slope.

In native precision (float32) a central difference is never better than ~ε^(2/3) ≈ 2e-5
relative: its truncation grows as h², its rounding as σ/h. Extrapolation removes the
truncation term by term, so large steps become usable, where σ/h is small. Central
differences D(hⱼ) at a ladder of steps hⱼ = H/2ʲ are combined in Neville's tableau
(Ridders, *Advances in Engineering Software* 4, 1982; Press et al., *Numerical Recipes*
§5.7): T[j][k] has the h², …, h²ᵏ terms removed. Each entry carries

- a truncation estimate: its distance to the entry of order k−1 at the same step and to
  the entry of order k one step coarser (each the error of an estimate worse than it, in
  the regime where extrapolation works; Ridders' own estimate, the distance to the two
  entries of order k−1, is the error of the worse of those, often 10× too pessimistic), and
- the rounding it carries: the measured noise σ of f (Moré & Wild's, see `escalation`),
  2σ/hⱼ per difference, through the absolute weights of the combination (a bound that
  does not assume independent rounding).

Each line takes the entry whose sum of the two is the smallest. The ladder starts at
`LADDER_TOP` times the step that balances the O(h²) truncation against the noise, so it
spans the best steps of every order up to h²·⁽ᴸᴱⱽᴱᴸˢ⁻¹⁾.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import differences as d
from . import verdicts as v

LEVELS = 8          # steps H, H/2, …, H/128
RATIO = 2.0         # between consecutive steps
# The ladder's top step, × the noise-balanced central step (3σ/|f'''|)^(1/3): the best step of
# an O(h⁸) estimate is ~(σ/|f⁽⁹⁾|)^(1/9), an order of magnitude or two above it in float32.
LADDER_TOP = 64.0


@dataclasses.dataclass(frozen=True, eq=False)
class Extrapolated:
    """Per line: the chosen tableau entry, its error bound (truncation + rounding, before
    the safety factor) and whether every loss value it could use was finite."""

    value: np.ndarray
    error: np.ndarray
    finite: np.ndarray
    noise: np.ndarray       # the rounding part of `error`


def average(results: list[Extrapolated]) -> Extrapolated:
    """The mean of estimates from ladders that share no point: their rounding is independent
    (Moré & Wild's model of the measured noise), so it falls as 1/√K in the mean, where the
    truncation estimates, which need not, are averaged."""
    k = len(results)
    value = np.mean([r.value for r in results], axis=0)
    truncation = np.mean([r.error - r.noise for r in results], axis=0)
    noise = np.sqrt(np.mean([r.noise ** 2 for r in results], axis=0) / k)
    finite = np.all([r.finite for r in results], axis=0)
    return Extrapolated(value, truncation + noise, finite, noise)


def extrapolate(f_plus: np.ndarray, f_minus: np.ndarray, h_plus: np.ndarray,
                h_minus: np.ndarray, rounding: np.ndarray) -> Extrapolated:
    """The tableau over central differences at levels of shape (LEVELS, m), coarsest first;
    `rounding[j]` bounds the rounding of one loss value at level j (≥ σ)."""
    h = 0.5 * (h_plus + h_minus)
    D = d.central(f_plus, f_minus, h_plus, h_minus)
    noise = 2.0 * rounding / (h_plus + h_minus) * 2.0   # |f₊ − f₋| rounding over 2h, ×2 margin
    finite = np.isfinite(D)
    D = np.where(finite, D, np.nan)
    levels, m = D.shape
    smooth = _smooth_levels(D, noise)
    best = D[0].copy()
    best_err, best_noise = np.full(m, np.inf), np.full(m, np.inf)
    previous, previous_noise = [D[0]], [noise[0]]
    for j in range(1, levels):
        row, row_noise = [D[j]], [noise[j]]
        # order 0: the plain central difference, its truncation the change from the level above
        candidates = [(D[j], np.abs(D[j] - D[j - 1]) + noise[j], noise[j])]
        for k in range(1, j + 1):
            q = (h[j - k] / h[j]) ** 2
            t = row[k - 1] + (row[k - 1] - previous[k - 1]) / (q - 1.0)
            n = row_noise[k - 1] * q / (q - 1.0) + previous_noise[k - 1] / (q - 1.0)
            row.append(t)
            row_noise.append(n)
            if k < j:   # the same order one step coarser exists
                truncation = np.maximum(np.abs(t - row[k - 1]), np.abs(t - previous[k]))
                # only where every level it rests on (j−k−1 … j) changes as a smooth f's
                ok = np.all(smooth[j - k + 1:j + 1], axis=0)
                candidates.append((t, np.where(ok, truncation + n, np.inf), n))
        for value, err, rounding_part in candidates:
            with np.errstate(invalid="ignore"):
                better = np.isfinite(err) & (err < best_err)
            best, best_err = np.where(better, value, best), np.where(better, err, best_err)
            best_noise = np.where(better, rounding_part, best_noise)
        previous, previous_noise = row, row_noise
    return Extrapolated(best, best_err, np.all(finite, axis=0), best_noise)


def _smooth_levels(D: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Per level j ≥ 2 (rows 0, 1: True), whether D at levels j−2, j−1, j changes as a smooth
    f's does when h halves: by h², the coarser change 2 to 8 times the finer (4 in the limit),
    or both changes within rounding. A kink within the steps (a ReLU's) makes central
    differences change as h, or not at all on one side of it, and entries extrapolated
    across it can agree with each other by chance: they are not used."""
    out = np.ones(D.shape, bool)
    change = np.abs(np.diff(D, axis=0))                       # change[j−1] = |D[j] − D[j−1]|
    rounding = noise[1:] + noise[:-1]
    with np.errstate(invalid="ignore"):
        coarse, fine = change[:-1], change[1:]
        quadratic = (coarse >= 2.0 * fine - rounding[1:]) & (coarse <= 8.0 * fine + rounding[1:])
        flat = (coarse <= rounding[:-1]) & (fine <= rounding[1:])
    out[2:] = quadratic | flat
    return out


def kink_at_theta(f0: float, f_plus: np.ndarray, f_minus: np.ndarray, h_plus: np.ndarray,
                  h_minus: np.ndarray, rounding: np.ndarray) -> np.ndarray:
    """Per line, whether the one-sided slopes show a jump at θ anywhere on the ladder.

    J(h) = F(h) − B(h) is h·f'' + O(h³) for a smooth f, and jump + h·f'' at a kink at θ: the
    jump 2J(h/2) − J(h) is steady from level to level at a kink, where a smooth f's shrinks
    8-fold per halving (as `verdicts` tests at the escalation's steps). At a kink central
    differences of every order converge to the mean of the one-sided slopes, which a valid
    subgradient (relu'(0) = 0) need not equal."""
    F = (f_plus - f0) / h_plus
    B = (f0 - f_minus) / h_minus
    J = F - B
    jump = np.abs(2.0 * J[1:] - J[:-1])
    h = 0.5 * (h_plus + h_minus)
    noise = 10.0 * rounding[1:] / h[1:]
    with np.errstate(invalid="ignore"):
        steady = (np.abs(jump[1:] - jump[:-1]) <= v.JUMP_TOLERANCE
                  * np.maximum(jump[1:], jump[:-1])) & (jump[1:] > 2.0 * noise[1:])
    return np.any(steady, axis=0)


def ladder(top: np.ndarray) -> list[np.ndarray]:
    """The steps top, top/2, …, top/2^(LEVELS−1)."""
    return [top / RATIO**j for j in range(LEVELS)]


def rounding_of_values(eps_f: float, f0: float, f_plus: np.ndarray, f_minus: np.ndarray,
                       noise: float) -> np.ndarray:
    """Bound on the rounding of each loss value: the larger of the measured noise and
    `verdicts.ROUNDOFF_FACTOR`/2·ε·|f| (as the error model charges a first pass)."""
    scale = np.maximum(np.abs(f0), np.maximum(np.abs(f_plus), np.abs(f_minus)))
    with np.errstate(invalid="ignore"):
        return np.maximum(0.5 * v.ROUNDOFF_FACTOR * eps_f * scale, noise)
