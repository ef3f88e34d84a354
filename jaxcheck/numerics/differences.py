"""Finite-difference steps and stencils (pure NumPy on float64 values).

Step sizes come from the classic error balance (Nocedal & Wright, *Numerical Optimization*,
§8.1; Press et al., *Numerical Recipes*, §5.7): with machine epsilon ε and parameter scale
s = max(1, |θᵢ|), a central difference has truncation ~h² and round-off ~ε/h, minimised at
h ≈ ε^(1/3)·s; with one Richardson extrapolation the truncation is ~h⁴ and the best step is
h ≈ ε^(1/5)·s.
"""
from __future__ import annotations

import numpy as np

CENTRAL_EXPONENT = 1.0 / 3.0     # O(h²) stencil: h ~ ε^(1/3)
RICHARDSON_EXPONENT = 1.0 / 5.0  # O(h⁴) after one extrapolation: h ~ ε^(1/5)
RICHARDSON_LEVELS = 3            # steps h, h/2, h/4: two extrapolations, one error estimate


def relative_step(eps_mach: float, exponent: float) -> float:
    return float(eps_mach ** exponent)


def perturbed_points(theta: np.ndarray, h: np.ndarray, dtype: np.dtype):
    """The points θ+h and θ−h as representable numbers of `dtype`, and the exact steps taken.

    Differences are divided by the step actually taken, (θ+h)−θ in the working dtype, not
    the intended h, so the representation error of θ+h does not enter the estimate.
    """
    plus, h_plus = offset_points(theta, h, dtype)
    minus, h_minus = offset_points(theta, -np.asarray(h), dtype)
    return plus, minus, h_plus, -h_minus


def offset_points(theta: np.ndarray, offset: np.ndarray, dtype: np.dtype):
    """The points θ + offset (signed) in `dtype`, and the signed offsets actually taken."""
    theta = theta.astype(dtype)
    offset = np.asarray(offset)
    point = (theta + offset.astype(dtype)).astype(dtype)
    # A step below half an ulp of θ rounds away; take the neighbouring number instead, so a
    # difference is never 0/0 (a zero numerical derivative) however coarse the dtype.
    toward = np.where(offset < 0, -np.inf, np.inf)
    point = np.where(point == theta, np.nextafter(theta, toward.astype(dtype)), point)
    return point, point.astype(np.float64) - theta.astype(np.float64)


def component_steps(theta: np.ndarray, rel: float) -> np.ndarray:
    """Per-component step rel·max(1, |θᵢ|): relative for large parameters, absolute near 0."""
    return rel * np.maximum(1.0, np.abs(theta.astype(np.float64)))


def central(f_plus, f_minus, h_plus, h_minus):
    return (f_plus - f_minus) / (h_plus + h_minus)


def forward(f0, f_plus, h_plus):
    return (f_plus - f0) / h_plus


def backward(f0, f_minus, h_minus):
    return (f0 - f_minus) / h_minus


def richardson(d_coarse, d_fine, order: int = 2):
    """Eliminate the h^order term from two estimates at steps h and h/2."""
    w = 2.0 ** order
    return (w * d_fine - d_coarse) / (w - 1.0)


NOISE_ORDER = 6          # Moré & Wild, "Estimating computational noise" (SIAM J. Sci. Comput. 2011)
NOISE_STEP = 1e-3        # × the first-pass step: f^(6)·δ⁶ is negligible, the points still distinct


def noise_level(values: np.ndarray) -> float:
    """Standard deviation of the rounding noise of f from rows of 7 values f(θ + kδ), k=0..6.

    The 6th difference of a smooth function at a tiny spacing is pure noise, with variance
    C(12, 6)·σ² = 924·σ² for independent noise of standard deviation σ.
    """
    weights = np.array([1.0, -6.0, 15.0, -20.0, 15.0, -6.0, 1.0])
    sixth = values @ weights
    return float(np.sqrt(np.mean(sixth**2) / 924.0))
