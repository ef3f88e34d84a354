"""The report of a kernel checked against a reference implementation, and its text."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..numerics.reference_comparison import ForwardComparison
from .report import Report
from .text import render_text, table, verdict_line

_KIND = {"forward": "forward mismatch", "backward": "backward mismatch",
         "both": "forward and backward mismatch"}


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


def _verdict(report: ReferenceReport) -> str:
    n = report.n_components
    if report.ok:
        return (f"jaxcheck (reference): OK - the kernel's loss and all {n:,} components of its "
                f"gradient agree with the float64 reference within the kernel's rounding")
    found = []
    forward = report.forward
    if forward is not None and not forward.ok:
        found.append("the loss values differ" + ("" if not forward.value_ok else
                                                  " near params (not at params)"))
    if report.failures:
        found.append(f"{report.n_fail:,} of {n:,} gradient components differ from the "
                     f"float64 reference, worst {report.failures[0].location}")
    native = report.native
    if native is not None and not native.ok:
        found.append(f"the gradient misses the kernel's own finite differences at "
                     f"{native.n_fail:,} component(s)")
    return f"jaxcheck (reference): FAIL - {_KIND[report.disagreement]}: " + "; ".join(found)


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
    native = {leaf.path: leaf for leaf in report.native.leaves} if report.native else {}
    rows = [["leaf", "shape", "size", "rel. diff", "FAIL vs reference", "FAIL vs own FD"]]
    for leaf in report.leaves:
        own = native.get(leaf.path)
        rows.append([leaf.path, str(leaf.shape), f"{leaf.size:,}",
                     f"{leaf.relative_difference:.1e}", str(leaf.n_fail),
                     "-" if own is None else str(own.n_fail)])
    lines = [_verdict(report), ""]
    if report.forward is not None:
        lines += _forward_lines(report.forward)
    lines += table(rows, right={2, 3, 4, 5})
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
