"""The text of fast- and sample-mode reports, which examine only some components.

Fast mode's verdict comes from directional checks (of all leaves together, or of each leaf on
its own), so the leaf table shows them (and the Taylor order) beside the components localised
by group testing; sample mode's table says how many components were drawn. The failing-components table is full mode's.
"""
from __future__ import annotations

from ._report import Report, _table


def _worst(report: Report, limit: int) -> list[str]:
    failures = report.failures
    if not (failures and limit):
        return []
    lines = ["", f"worst components ({min(limit, len(failures))} of {len(failures):,}):"]
    rows = [["component", "analytic", "numerical", "tolerance", "|a-n|/tol"]]
    for f in failures[:limit]:
        rows.append([f.location, f"{f.analytic:+.6e}", f"{f.numerical:+.6e}",
                     f"{f.tolerance:.1e}", f"{f.excess:.1e}"])
    return lines + _table(rows, right={1, 2, 3, 4})


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
        return "\n".join(lines + _table(rows, right={2, 3, 4, 5, 6}) + _worst(report, limit))
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
    lines += _table(rows, right={2, 3, 4, 5, 6, 7})
    lines += ["", "directions: Rademacher; P(miss a wrong leaf) <= 2^-k for a leaf alone, "
              "2*2^-k after a joint test of all leaves (joint: passed by that test); "
              "Taylor order: remainder ~ h^order, 2 for a correct gradient, 1 for a wrong one"]
    return "\n".join(lines + _worst(report, limit))
