"""The report of a kernel checked against a reference implementation, and its text."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..numerics.reference_comparison import ForwardComparison
from .report import Report
from .text import RENDERERS, render_text, table, verdict_line


@dataclasses.dataclass(frozen=True, eq=False)
class ReferenceReport(Report):
    """What `jaxcheck.check(fn, params, *args, reference=ref)` found.

    The inherited fields compare the kernel's gradient (`analytic`, in native precision) with
    the float64 gradient of `ref` (`numerical`), per component, with tolerances from the
    kernel's measured rounding; `failures` are the components where they differ.

    - `forward`: the kernel's loss against the reference's at params (`forward.kernel`,
      `forward.reference`, `forward.tolerance`, `forward.value_ok`) and at jittered points
      around it, where a forward with the right value but another slope shows
      (`forward.ok`: all agree).
    - `native`: the ordinary native-precision `Report` of the kernel against its own finite
      differences.
    - `disagreement`: `"none"`, `"forward"`, `"backward"` or `"both"`: which side of the
      kernel disagrees with the reference.
    - `ok`: True iff `disagreement == "none"`.
    """

    forward: ForwardComparison | None = None
    native: Report | None = None
    disagreement: str = "none"

    @property
    def ok(self) -> bool:
        return self.disagreement == "none"

    def __str__(self) -> str:
        return render_reference(self)

    def __repr__(self) -> str:
        return (f"ReferenceReport(ok={self.ok}, disagreement={self.disagreement!r}, "
                f"n_fail={self.n_fail}, relative_difference={self.relative_difference:.2e})")


def _forward_lines(forward: ForwardComparison) -> list[str]:
    diffs = forward.differences
    return [f"forward: loss at params {'agrees' if forward.value_ok else 'DIFFERS'}: kernel "
            f"{forward.kernel:+.9e}, reference {forward.reference:+.9e}, |difference| "
            f"{diffs[0]:.1e}, tolerance {forward.tolerance:.1e}",
            f"         at {len(diffs) - 1} jittered points: "
            f"{'agrees' if bool(np.all(diffs[1:] <= forward.tolerance)) else 'DIFFERS'}, worst "
            f"|difference| {diffs[1:].max(initial=0.0):.1e}", ""]


def render_reference(report: ReferenceReport, max_failures: int | None = None) -> str:
    """The verdict line, the forward's comparison, the per-leaf table (against the reference
    and against the kernel's own differences), the worst components, and the native check's
    verdict line."""
    limit = report.max_failures if max_failures is None else max_failures
    lines = [verdict_line(report), ""]
    if report.forward is not None:
        lines += _forward_lines(report.forward)
    lines += RENDERERS["reference"][1](report)
    failures = report.failures
    if failures and limit:
        lines += ["", f"worst components ({min(limit, len(failures))} of {len(failures):,}):"]
        worst = [["component", "kernel", "reference", "tolerance", "|k-r|/tol"]]
        for f in failures[:limit]:
            worst.append([f.location, f"{f.analytic:+.6e}", f"{f.numerical:+.6e}",
                          f"{f.tolerance:.1e}", f"{f.excess:.1e}"])
        lines += table(worst, right={1, 2, 3, 4})
    if report.native is not None:
        lines += ["", "kernel against its own finite differences (native precision):",
                  "  " + verdict_line(report.native)]
        if not report.native.ok:
            lines += ["  " + line for line in render_text(report.native, limit).splitlines()[2:]]
    return "\n".join(lines)
