"""The result of a check: data first (`Report`, `LeafReport`, `Failure`), then its text."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from ._verdicts import FAIL, INCONCLUSIVE

if TYPE_CHECKING:  # fast mode's results; those modules import this one
    from ._directional import DirectionalChecks
    from ._taylor import TaylorResult

# The classic reading of ‖a−b‖/(‖a‖+‖b‖) (CS231n notes; Ng's UFLDL gradient-checking notes).
BANDS = ((1e-7, "excellent"), (1e-5, "ok"), (1e-3, "suspicious"))


def band_of(relative_difference: float) -> str:
    """The row of the classic table: excellent < 1e-7 ≤ ok < 1e-5 ≤ suspicious < 1e-3 ≤ wrong."""
    for bound, name in BANDS:
        if relative_difference < bound:
            return name
    return "wrong"


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


class VerdictSummary:
    """Totals over a report's verdict tables (`_tables`: its leaves, or Jacobian blocks)."""

    @property
    def _tables(self) -> Sequence[Any]:
        raise NotImplementedError

    @property
    def failures(self) -> tuple[Any, ...]:
        """Failing entries, worst (furthest outside its tolerance) first."""
        found = [f for table in self._tables for f in table.failures()]
        return tuple(sorted(found, key=lambda f: -f.excess))

    @property
    def n_components(self) -> int:
        return sum(table.size for table in self._tables)

    @property
    def n_fail(self) -> int:
        return sum(table.n_fail for table in self._tables)

    @property
    def n_inconclusive(self) -> int:
        return sum(table.n_inconclusive for table in self._tables)


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
    indices: Optional[np.ndarray] = None
    directions: Optional["DirectionalChecks"] = None
    taylor: Optional["TaylorResult"] = None

    @property
    def ok(self) -> bool:
        """No component FAILs and (fast mode) no direction FAILs."""
        return self.n_fail == 0 and (self.directions is None or self.directions.n_fail == 0)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def relative_difference(self) -> float:
        if self.directions is not None:  # fast mode: over the directional derivatives
            return self.directions.relative_difference
        return self._compared_relative_difference()

    def failures(self) -> list[Failure]:
        return [
            Failure(self.path, tuple(int(i) for i in np.unravel_index(
                        k if self.indices is None else self.indices[k], self.shape)),
                    float(self.analytic[k]), float(self.numerical[k]), float(self.tolerance[k]))
            for k in np.flatnonzero(self.status == FAIL)
        ]


@dataclasses.dataclass(frozen=True, eq=False)
class Report(VerdictSummary):
    """What `jaxcheck.check` found.

    - `ok`: False iff at least one component FAILs.
    - `relative_difference`: the classic ‖a−b‖/(‖a‖+‖b‖) over all compared components, and
      `band` its row of the classic table ("excellent", "ok", "suspicious", "wrong").
    - `leaves`: a `LeafReport` per checked leaf (path as `jax.tree_util.keystr` prints it).
    - `failures`: failing components, worst (furthest outside its tolerance) first.
    """

    leaves: tuple[LeafReport, ...]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_failures: int = 10

    @property
    def _tables(self) -> Sequence[LeafReport]:
        return self.leaves

    @property
    def ok(self) -> bool:
        return all(leaf.ok for leaf in self.leaves)

    @property
    def relative_difference(self) -> float:
        if any(leaf.directions is not None for leaf in self.leaves):  # fast mode
            # a joint test is shared by the leaves it covers: count it once
            d = list({id(leaf.directions): leaf.directions for leaf in self.leaves
                      if leaf.directions is not None}.values())
            m = [x.status != INCONCLUSIVE for x in d]
            return relative_difference(np.concatenate([x.analytic[k] for x, k in zip(d, m)]),
                                       np.concatenate([x.numerical[k] for x, k in zip(d, m)]))
        a = [leaf.analytic[leaf.compared] for leaf in self.leaves]
        b = [leaf.numerical[leaf.compared] for leaf in self.leaves]
        if not a:
            return 0.0
        return relative_difference(np.concatenate(a), np.concatenate(b))

    @property
    def band(self) -> str:
        return band_of(self.relative_difference)

    def leaf(self, path: str) -> LeafReport:
        """The `LeafReport` whose path is `path` (e.g. `"['W1']"`)."""
        for leaf in self.leaves:
            if leaf.path == path:
                return leaf
        raise KeyError(f"no checked leaf with path {path!r}; paths: "
                       f"{[leaf.path for leaf in self.leaves]}")

    def __str__(self) -> str:
        return render_text(self)

    def to_dict(self, max_failures: Optional[int] = None) -> dict[str, Any]:
        """The report as JSON-serialisable data, schema `"jaxcheck.report/1"`: `ok`,
        `relative_difference`, `band`, counts, `info`, `leaves` and `failures` (worst first; at
        most `max_failures`, default all). Documented in `jaxcheck._render`."""
        from ._render import to_dict

        return to_dict(self, max_failures)

    def to_json(self, indent: Optional[int] = 2, max_failures: Optional[int] = None) -> str:
        """`to_dict()` as a JSON string (strict JSON: non-finite numbers are `null`)."""
        from ._render import to_json

        return to_json(self, indent, max_failures)

    def _repr_html_(self) -> str:
        # Notebooks display this: a coloured verdict, the per-leaf table, the worst components.
        from ._render import to_html

        return to_html(self)

    def plot(self, leaves: Optional[Sequence[str]] = None) -> Any:
        """A matplotlib `Figure` (needs the `plot` extra): per-leaf relative difference against
        the classic bands, and an analytic-vs-numerical scatter per leaf (`leaves`: the paths to
        scatter; default all, at most 12)."""
        from ._render import plot

        return plot(self, leaves)

    def __repr__(self) -> str:
        return (f"Report(ok={self.ok}, n_fail={self.n_fail}, "
                f"n_inconclusive={self.n_inconclusive}, "
                f"relative_difference={self.relative_difference:.2e}, band={self.band!r})")


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        out.append("  " + "  ".join(cells).rstrip())
    return out


def verdict_line(report: Report) -> str:
    if report.info.get("mode") in ("fast", "sample"):
        from ._mode_text import partial_verdict_line
        return partial_verdict_line(report)
    n = report.n_components
    rel = f"relative difference {report.relative_difference:.1e} ({report.band})"
    kinks = (f"; {report.n_inconclusive:,} inconclusive at kinks"
             if report.n_inconclusive else "")
    if report.ok:
        return f"jaxcheck: OK - all {n:,} components within tolerance; {rel}{kinks}"
    worst = report.failures[0].location
    return (f"jaxcheck: FAIL - {report.n_fail:,} of {n:,} components outside tolerance, "
            f"worst {worst}; {rel}{kinks}")


def render_text(report: Report, max_failures: Optional[int] = None) -> str:
    limit = report.max_failures if max_failures is None else max_failures
    if report.info.get("mode") in ("fast", "sample"):
        from ._mode_text import render_partial
        return render_partial(report, limit)
    lines = [verdict_line(report), ""]
    rows = [["leaf", "shape", "size", "rel. diff", "FAIL", "INCONCLUSIVE"]]
    for leaf in report.leaves:
        rows.append([leaf.path, str(leaf.shape), f"{leaf.size:,}",
                     f"{leaf.relative_difference:.1e}", str(leaf.n_fail),
                     str(leaf.n_inconclusive)])
    lines += _table(rows, right={2, 3, 4, 5})
    failures = report.failures
    if failures and limit:
        lines += ["", f"worst components ({min(limit, len(failures))} of {len(failures):,}):"]
        rows = [["component", "analytic", "numerical", "tolerance", "|a-n|/tol"]]
        for f in failures[:limit]:
            rows.append([f.location, f"{f.analytic:+.6e}", f"{f.numerical:+.6e}",
                         f"{f.tolerance:.1e}", f"{f.excess:.1e}"])
        lines += _table(rows, right={1, 2, 3, 4})
    return "\n".join(lines)
