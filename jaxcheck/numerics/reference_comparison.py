"""A kernel judged against a float64 reference implementation, and against itself.

Per component i, two comparisons with tolerances from measured rounding:

- r: the kernel's gradient g against the reference's float64 gradient R;
- s: g against the kernel's own finite differences in native precision (the ordinary native
  check, `native`);

and the kernel's loss against the reference's, at params and at the jittered points around it
(where a forward that agrees at params but has another slope shows). They say which side of
the kernel is wrong. The forward disagrees when a value does. The backward disagrees where g
misses its own forward's slope (s), or, when the forward agrees with the reference everywhere,
where g misses R (r): a g that follows a wrong forward is the forward's error, not the
backward's.

The tolerance of r (and of the values) is the kernel's rounding as measured at params and at
jittered copies of it (`evaluation.reference_points`): with e_j = kernel − reference at point j,
and the points after the first in antithetic pairs (+j, −j),

    tol = safety · (max_j |(e₊ⱼ + e₋ⱼ)/2 − e₀| + max_j |native reference_j − reference_j| + 2ε|R|)

the spread of the kernel's error around the point (a bug's error cancels in it to first order
in the jitter, so it cannot widen its own tolerance), the rounding of the same arithmetic
associated another way (the reference run in native precision), and a floor of a few ulps for
errors that stay put.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ..evaluation.reference_points import ReferencePoints
from .results import LeafReport
from .verdicts import FAIL, INCONCLUSIVE, PASS

DISAGREEMENTS = ("none", "forward", "backward", "both")


@dataclasses.dataclass(frozen=True)
class ForwardComparison:
    """The kernel's loss against the reference's (float64), at params (`kernel`,
    `reference`) and at the jittered points around it (`kernel_values`, `reference_values`,
    point 0 being params; `jitter`: each point's relative jitter), with one `tolerance` from
    the kernel's measured rounding."""

    kernel_values: tuple[float, ...]
    reference_values: tuple[float, ...]
    jitter: tuple[float, ...]
    tolerance: float

    @property
    def kernel(self) -> float:
        return self.kernel_values[0]

    @property
    def reference(self) -> float:
        return self.reference_values[0]

    @property
    def differences(self) -> np.ndarray:
        """|kernel − reference| per point: 0 where the reference is not finite (no information
        there), inf where only the kernel is not."""
        k, r = np.asarray(self.kernel_values), np.asarray(self.reference_values)
        diff = np.abs(np.where(np.isfinite(k), k, np.inf) - r)
        return np.where(np.isfinite(r), diff, 0.0)

    @property
    def value_ok(self) -> bool:
        """The values agree at params."""
        return bool(self.differences[0] <= self.tolerance)

    @property
    def ok(self) -> bool:
        """The values agree at params and at every jittered point."""
        return bool(np.all(self.differences <= self.tolerance))


@dataclasses.dataclass(frozen=True)
class ReferenceComparison:
    """Per leaf the kernel's gradient against the reference's (`leaves`: analytic = kernel,
    numerical = float64 reference), the forward's comparison, and the verdict's kind."""

    leaves: tuple[LeafReport, ...]
    forward: ForwardComparison
    disagreement: str                 # one of DISAGREEMENTS


def rounding_tolerance(kernel: np.ndarray, reference: np.ndarray, reference_native: np.ndarray,
                       eps: float, safety: float) -> np.ndarray:
    """Per component (columns; rows are the points: the user's, then antithetic pairs) the
    tolerance of |kernel − reference| at point 0 (see the module's docstring)."""
    error = kernel - reference
    pairs = (error[1::2] + error[2::2]) / 2
    # a point where anything overflowed tells nothing about rounding
    spread = np.max(_finite_or_zero(np.abs(pairs - error[0])), axis=0, initial=0.0)
    other = np.max(_finite_or_zero(np.abs(reference_native - reference)), axis=0)
    return safety * (spread + other + 2 * eps * np.abs(reference[0]))


def _finite_or_zero(x: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(x), x, 0.0)


def compare(points: ReferencePoints, paths: Sequence[str], shapes: Sequence[tuple[int, ...]],
            dtypes: Sequence[str], native: Sequence[LeafReport], eps: float,
            safety: float) -> ReferenceComparison:
    """The comparisons r and s and of the values, from the points and the native check."""
    k, ref, ref_native = points.kernel, points.reference, points.reference_native
    value_tol = float(rounding_tolerance(k.values[:, None], ref.values[:, None],
                                         ref_native.values[:, None], eps, safety)[0])
    forward = ForwardComparison(tuple(map(float, k.values)), tuple(map(float, ref.values)),
                                points.jitter, value_tol)
    leaves, backward = [], False
    for i, (path, shape, dtype) in enumerate(zip(paths, shapes, dtypes)):
        g, big_r = k.gradients[i][0], ref.gradients[i][0]
        tol = rounding_tolerance(k.gradients[i], ref.gradients[i], ref_native.gradients[i],
                                 eps, safety)
        r = ~(np.abs(g - big_r) <= tol)      # a non-finite kernel gradient fails
        status = np.where(r, FAIL, PASS)
        # at a kink the native check found g a valid subgradient; the reference may have
        # chosen another one (relu'(0) = 0 or 1)
        own = native[i]
        kinks = np.flatnonzero(own.status == INCONCLUSIVE)
        if kinks.size:
            at = kinks if own.indices is None else np.asarray(own.indices)[kinks]
            status[at] = np.where(r[at], INCONCLUSIVE, PASS)
        leaves.append(LeafReport(path, tuple(shape), dtype, g, big_r, tol, status))
        backward |= (not own.ok) or (forward.ok and bool(np.any(status == FAIL)))
    kind = DISAGREEMENTS[int(not forward.ok) + 2 * int(backward)]
    return ReferenceComparison(tuple(leaves), forward, kind)
