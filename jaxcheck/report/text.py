"""The text of a report: the verdict line, the per-leaf table and the worst components.

Full mode's table lists every leaf's relative difference and counts; fast and sample mode,
which examine only some components, have their own tables (below).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from .report import Report


def table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        out.append("  " + "  ".join(cells).rstrip())
    return out


def verdict_line(report: Report) -> str:
    if report.info.get("mode") in ("fast", "sample"):
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
        return render_partial(report, limit)
    lines = [verdict_line(report), ""]
    rows = [["leaf", "shape", "size", "rel. diff", "FAIL", "INCONCLUSIVE"]]
    for leaf in report.leaves:
        rows.append([leaf.path, str(leaf.shape), f"{leaf.size:,}",
                     f"{leaf.relative_difference:.1e}", str(leaf.n_fail),
                     str(leaf.n_inconclusive)])
    lines += table(rows, right={2, 3, 4, 5})
    failures = report.failures
    if failures and limit:
        lines += ["", f"worst components ({min(limit, len(failures))} of {len(failures):,}):"]
        rows = [["component", "analytic", "numerical", "tolerance", "|a-n|/tol"]]
        for f in failures[:limit]:
            rows.append([f.location, f"{f.analytic:+.6e}", f"{f.numerical:+.6e}",
                         f"{f.tolerance:.1e}", f"{f.excess:.1e}"])
        lines += table(rows, right={1, 2, 3, 4})
    return "\n".join(lines)


# ---------------------------------------------- fast and sample mode: only some components


def _worst(report: Report, limit: int) -> list[str]:
    failures = report.failures
    if not (failures and limit):
        return []
    lines = ["", f"worst components ({min(limit, len(failures))} of {len(failures):,}):"]
    rows = [["component", "analytic", "numerical", "tolerance", "|a-n|/tol"]]
    for f in failures[:limit]:
        rows.append([f.location, f"{f.analytic:+.6e}", f"{f.numerical:+.6e}",
                     f"{f.tolerance:.1e}", f"{f.excess:.1e}"])
    return lines + table(rows, right={1, 2, 3, 4})


def _rel(report: Report) -> str:
    return f"relative difference {report.relative_difference:.1e} ({report.band})"


def partial_verdict_line(report: Report) -> str:
    n = report.n_components
    evaluations = report.info.get("evaluations")
    cost = f"; {evaluations:,} loss evaluations" if evaluations is not None else ""
    if report.info.get("mode") == "sample":
        m = sum(leaf.analytic.size for leaf in report.leaves)
        if report.ok:
            return (f"jaxcheck (sample): OK - {m:,} sampled of {n:,} components within "
                    f"tolerance; {_rel(report)}{cost}")
        return (f"jaxcheck (sample): FAIL - {report.n_fail:,} of {m:,} sampled components "
                f"(of {n:,}) outside tolerance, worst {report.failures[0].location}; "
                f"{_rel(report)}{cost}")
    k = report.info.get("directions", 0)
    leaves = report.leaves
    if report.ok:
        joint = sum(leaf.directions is not None and bool(leaf.directions.joint)
                    for leaf in leaves)
        how = (f"checked together by {k} random directions (one joint test)"
               if joint == len(leaves) else
               f"checked by {k} random directions each" if not joint else
               f"checked by {k} random directions ({joint} together, {len(leaves) - joint} "
               f"each on its own)")
        return (f"jaxcheck (fast): OK - {len(leaves)} leaves ({n:,} components) {how}, all "
                f"within tolerance; {_rel(report)} over the directional derivatives{cost}")
    bad = [leaf.path for leaf in leaves if not leaf.ok]
    if report.failures:
        found = (f"localised {report.n_fail:,} component(s) outside tolerance, worst "
                 f"{report.failures[0].location}")
    else:
        found = "no single component outside its own tolerance (the error is spread thin)"
    return (f"jaxcheck (fast): FAIL - {len(bad)} of {len(leaves)} leaves wrong along random "
            f"directions ({', '.join(bad)}); {found}; {_rel(report)}{cost}")


def render_partial(report: Report, limit: int) -> str:
    lines = [partial_verdict_line(report), ""]
    if report.info.get("mode") == "sample":
        rows = [["leaf", "shape", "size", "sampled", "rel. diff", "FAIL", "INCONCLUSIVE"]]
        for leaf in report.leaves:
            rows.append([leaf.path, str(leaf.shape), f"{leaf.size:,}",
                         f"{leaf.analytic.size:,}", f"{leaf.relative_difference:.1e}",
                         str(leaf.n_fail), str(leaf.n_inconclusive)])
        return "\n".join(lines + table(rows, right={2, 3, 4, 5, 6}) + _worst(report, limit))
    rows = [["leaf", "shape", "size", "directions", "rel. diff", "Taylor order",
             "examined", "FAIL"]]
    for leaf in report.leaves:
        d = leaf.directions
        if d is None:
            continue
        verdict = (f"{d.n_fail}/{d.k} FAIL" if d.n_fail else
                   f"{d.k - d.n_inconclusive}/{d.k} pass"
                   + (f", {d.n_inconclusive} kink" if d.n_inconclusive else "")
                   + (" (joint)" if d.joint else ""))
        order = leaf.taylor.order if leaf.taylor is not None else None
        rows.append([leaf.path, str(leaf.shape), f"{leaf.size:,}", verdict,
                     f"{leaf.relative_difference:.1e}",
                     "-" if order is None else f"{order:.2f}",
                     f"{leaf.analytic.size:,}", str(leaf.n_fail)])
    lines += table(rows, right={2, 3, 4, 5, 6, 7})
    lines += ["", "directions: Rademacher; P(miss a wrong leaf) <= 2^-k for a leaf alone, "
              "2*2^-k after a joint test of all leaves (joint: passed by that test); "
              "Taylor order: remainder ~ h^order, 2 for a correct gradient, 1 for a wrong one"]
    return "\n".join(lines + _worst(report, limit))
