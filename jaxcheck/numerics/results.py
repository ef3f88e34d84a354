"""What the numerics hand to the report: per-leaf verdict tables and failing components.

`LeafReport` holds, per checked leaf, the analytic and numerical values, tolerances and
verdicts of the components examined; fast mode adds the leaf's directional checks. A
`Report` (`report/report.py`) gathers them and renders them.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from .verdicts import FAIL, INCONCLUSIVE

if TYPE_CHECKING:  # fast mode's results; those modules import this one
    from .direction_checks import DirectionalChecks
    from .gradient_direction import AlongGradient
    from .taylor import TaylorResult


# The references `precision="native"` chooses per leaf in full mode (`numerics/sharpest`).
COMPLEX_STEP = "complex step"
RIDDERS = "Ridders extrapolation"
CENTRAL = "central differences"
REFERENCES = (COMPLEX_STEP, RIDDERS, CENTRAL)


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """‖a−b‖ / (‖a‖+‖b‖); 0 when both are zero."""
    denom = float(np.linalg.norm(a) + np.linalg.norm(b))
    return float(np.linalg.norm(a - b)) / denom if denom > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class Failure:
    """One failing component: where it is, both values, and the tolerance it broke."""

    path: str
    index: tuple[int, ...]
    analytic: float
    numerical: float
    tolerance: float

    @property
    def excess(self) -> float:
        """|analytic − numerical| / tolerance: how far outside its tolerance (> 1)."""
        return abs(self.analytic - self.numerical) / self.tolerance if self.tolerance else np.inf

    @property
    def location(self) -> str:
        return f"{self.path}[{', '.join(map(str, self.index))}]" if self.index else self.path


class VerdictTable:
    """Counts shared by every table of per-entry verdicts (`analytic`, `numerical`, `status`)."""

    analytic: np.ndarray
    numerical: np.ndarray
    status: np.ndarray

    @property
    def compared(self) -> np.ndarray:
        """Mask of entries with a verdict (INCONCLUSIVE kinks are left out)."""
        return self.status != INCONCLUSIVE

    @property
    def n_fail(self) -> int:
        return int(np.sum(self.status == FAIL))

    @property
    def n_inconclusive(self) -> int:
        return int(np.sum(self.status == INCONCLUSIVE))

    def _compared_relative_difference(self) -> float:
        m = self.compared
        return relative_difference(self.analytic[m], self.numerical[m])


@dataclasses.dataclass(frozen=True, eq=False)
class LeafReport(VerdictTable):
    """Per-leaf verdicts. Arrays are flat (row-major) and indexed like the leaf's `ravel()`.

    In the fast and sample modes the arrays hold only the components examined one by one;
    `indices` gives their flat indices. Fast mode adds `directions` (the leaf's directional
    checks, which decide its verdict) and `taylor` (the Taylor test along one direction).
    """

    path: str
    shape: tuple[int, ...]
    dtype: str
    analytic: np.ndarray
    numerical: np.ndarray
    tolerance: np.ndarray
    status: np.ndarray
    indices: np.ndarray | None = None
    directions: DirectionalChecks | None = None
    taylor: TaylorResult | None = None
    # the numerical reference its components were judged against (`REFERENCES`); None where
    # the mode or method says it (fast mode's directions, method="complex")
    reference: str | None = None
    # native precision, full mode: the leaf's check along its gradient (`gradient_direction`),
    # whose FAIL fails the leaf as a whole (a failure with no index)
    along_gradient: AlongGradient | None = None

    @property
    def n_fail(self) -> int:
        along = self.along_gradient
        return int(np.sum(self.status == FAIL)) + int(along is not None
                                                      and along.status == FAIL)

    @property
    def ok(self) -> bool:
        """No component FAILs and (fast mode) no direction FAILs."""
        return self.n_fail == 0 and (self.directions is None or self.directions.n_fail == 0)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def compared_values(self) -> tuple[Any, np.ndarray, np.ndarray]:
        """`(owner, analytic, numerical)`: the values this leaf's verdict was decided on (kinks
        left out), and the object holding them: the leaf's own components, or in fast mode
        its directional checks, which one joint test shares among several leaves (a report
        counts each owner once)."""
        if self.directions is not None and self.directions.k:   # k = 0: none decided
            d = self.directions
            m = d.status != INCONCLUSIVE
            return d, d.analytic[m], d.numerical[m]
        m = self.compared
        return self, self.analytic[m], self.numerical[m]

    @property
    def relative_difference(self) -> float:
        """‖a−n‖/(‖a‖+‖n‖) over `compared_values`."""
        _, a, n = self.compared_values()
        return relative_difference(a, n)

    def failures(self) -> list[Failure]:
        found = [
            Failure(self.path, tuple(int(i) for i in np.unravel_index(
                        k if self.indices is None else self.indices[k], self.shape)),
                    float(self.analytic[k]), float(self.numerical[k]), float(self.tolerance[k]))
            for k in np.flatnonzero(self.status == FAIL)
        ]
        along = self.along_gradient
        if along is not None and along.status == FAIL:   # the leaf as a whole: no index
            found.append(Failure(self.path, (), along.analytic, along.numerical,
                                 along.tolerance))
        return found
