"""The text of a report: a renderer of its data, one per mode.

Every mode's text is a verdict line, a per-leaf table and the worst components. Full mode's
table lists every leaf's relative difference and counts; sample mode says how many components
were drawn; fast mode, whose verdict comes from directional checks, shows them and the Taylor
order beside the components localised by group testing; a kernel checked against a reference
(`info["renderer"] == "reference"`) says which side disagrees. `RENDERERS` maps `info["mode"]`
(or `info["renderer"]`) to the (verdict line, leaf table) pair; a new mode adds its pair there.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .report import Report


def table(rows: list[list[str]], right: set[int]) -> list[str]:
    """Rows as aligned text columns (those in `right` right-aligned)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths))]
        out.append("  " + "  ".join(cells).rstrip())
    return out


def _rel(report: Report) -> str:
    return f"relative difference {report.relative_difference:.1e} ({report.band})"


def _cost(report: Report) -> str:
    evaluations = report.info.get("evaluations")
    return f"; {evaluations:,} loss evaluations" if evaluations is not None else ""


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


# ----------------------------------------------------------------------------------- full


def _full_verdict(report: Report) -> str:
    n = report.n_components
    kinks = (f"; {report.n_inconclusive:,} inconclusive at kinks"
             if report.n_inconclusive else "")
    if report.ok:
        return f"jaxcheck: OK - all {n:,} components within tolerance; {_rel(report)}{kinks}"
    worst = report.failures[0].location
    return (f"jaxcheck: FAIL - {report.n_fail:,} of {n:,} components outside tolerance, "
            f"worst {worst}; {_rel(report)}{kinks}")


def _full_table(report: Report) -> list[str]:
    rows = [["leaf", "shape", "size", "rel. diff", "FAIL", "INCONCLUSIVE"]]
    for leaf in report.leaves:
        rows.append([leaf.path, str(leaf.shape), f"{leaf.size:,}",
                     f"{leaf.relative_difference:.1e}", str(leaf.n_fail),
                     str(leaf.n_inconclusive)])
    return table(rows, right={2, 3, 4, 5})


# --------------------------------------------------------------------------------- sample


def _sample_verdict(report: Report) -> str:
    n = report.n_components
    m = sum(leaf.analytic.size for leaf in report.leaves)
    if report.ok:
        return (f"jaxcheck (sample): OK - {m:,} sampled of {n:,} components within "
                f"tolerance; {_rel(report)}{_cost(report)}")
    return (f"jaxcheck (sample): FAIL - {report.n_fail:,} of {m:,} sampled components "
            f"(of {n:,}) outside tolerance, worst {report.failures[0].location}; "
            f"{_rel(report)}{_cost(report)}")


def _sample_table(report: Report) -> list[str]:
    rows = [["leaf", "shape", "size", "sampled", "rel. diff", "FAIL", "INCONCLUSIVE"]]
    for leaf in report.leaves:
        rows.append([leaf.path, str(leaf.shape), f"{leaf.size:,}",
                     f"{leaf.analytic.size:,}", f"{leaf.relative_difference:.1e}",
                     str(leaf.n_fail), str(leaf.n_inconclusive)])
    return table(rows, right={2, 3, 4, 5, 6})


# ----------------------------------------------------------------------------------- fast


def _fast_verdict(report: Report) -> str:
    n = report.n_components
    k = report.info.get("directions", 0)
    leaves = report.leaves
    if report.ok:
        joint = sum(leaf.directions is not None and bool(leaf.directions.joint)
                    for leaf in leaves)
        # the joint test draws one direction more than a leaf's own test (`numerics.fast`)
        kj = report.info.get("joint", {}).get("directions", k)
        how = (f"checked together by {kj} random directions (one joint test)"
               if joint == len(leaves) else
               f"checked by {k} random directions each" if not joint else
               f"checked by random directions ({joint} together by {kj}, {len(leaves) - joint} "
               f"each on its own by {k})")
        clearing = report.info.get("clearing")
        if clearing:
            how += (f"; after the joint test failed, {len(clearing['covered'])} passed a second "
                    f"of {clearing['directions']} directions")
        return (f"jaxcheck (fast): OK - {len(leaves)} leaves ({n:,} components) {how}, all "
                f"within tolerance; {_rel(report)} over the directional derivatives"
                f"{_cost(report)}")
    bad = [leaf.path for leaf in leaves if not leaf.ok]
    if report.failures:
        found = (f"localised {report.n_fail:,} component(s) outside tolerance, worst "
                 f"{report.failures[0].location}")
    else:
        found = "no single component outside its own tolerance (the error is spread thin)"
    return (f"jaxcheck (fast): FAIL - {len(bad)} of {len(leaves)} leaves wrong along random "
            f"directions ({', '.join(bad)}); {found}; {_rel(report)}{_cost(report)}")


def _fast_table(report: Report) -> list[str]:
    rows = [["leaf", "shape", "size", "directions", "rel. diff", "Taylor order",
             "examined", "FAIL"]]
    for leaf in report.leaves:
        d = leaf.directions
        if d is None:
            continue
        verdict = (f"not run ({d.undecided} undecided): a component FAILs" if not d.k else
                   f"{d.n_fail}/{d.k} FAIL"
                   + (f", {d.undecided} undecided" if d.undecided else "") if d.n_fail else
                   f"{d.k - d.n_inconclusive}/{d.k} pass"
                   + (f", {d.n_inconclusive} kink" if d.n_inconclusive else "")
                   + (" (joint)" if d.joint else ""))
        order = leaf.taylor.order if leaf.taylor is not None else None
        rows.append([leaf.path, str(leaf.shape), f"{leaf.size:,}", verdict,
                     f"{leaf.relative_difference:.1e}",
                     "-" if order is None else f"{order:.2f}",
                     f"{leaf.analytic.size:,}", str(leaf.n_fail)])
    return table(rows, right={2, 3, 4, 5, 6, 7}) + [
        "", "directions: Rademacher; P(miss a wrong leaf) <= 2^-k for a leaf alone, "
        "2*2^-k after a joint test of all leaves (joint: passed by a joint test, the first "
        "or, after it failed, one of k+1 over the leaves whose probe showed nothing); "
        "x/y FAIL: a leaf's test stops at its first confirmed FAIL (undecided: the "
        "directions not escalated; not run: a leaf whose probe showed is searched first, "
        "and a component FAIL confirmed by its own check decides it); "
        "Taylor order: remainder ~ h^order, 2 for a correct gradient, 1 for a wrong one"]


# ------------------------------------------------------------------------------ reference

_KIND = {"forward": "forward mismatch", "backward": "backward mismatch",
         "both": "forward and backward mismatch"}


def _reference_verdict(report: Report) -> str:
    # a ReferenceReport (`check(..., reference=)`): its `forward`, `native`, `disagreement`
    n = report.n_components
    if report.ok:
        return (f"jaxcheck (reference): OK - the kernel's loss and all {n:,} components of its "
                f"gradient agree with the float64 reference within the kernel's rounding")
    found = []
    forward, native = getattr(report, "forward", None), getattr(report, "native", None)
    if forward is not None and not forward.ok:
        found.append("the loss values differ" + ("" if not forward.value_ok else
                                                  " near params (not at params)"))
    if report.failures:
        found.append(f"{report.n_fail:,} of {n:,} gradient components differ from the "
                     f"float64 reference, worst {report.failures[0].location}")
    if native is not None and not native.ok:
        found.append(f"the gradient misses the kernel's own finite differences at "
                     f"{native.n_fail:,} component(s)")
    kind = _KIND.get(getattr(report, "disagreement", ""), "mismatch")
    return f"jaxcheck (reference): FAIL - {kind}: " + "; ".join(found)


def _reference_table(report: Report) -> list[str]:
    native = getattr(report, "native", None)
    own = {leaf.path: leaf for leaf in native.leaves} if native is not None else {}
    rows = [["leaf", "shape", "size", "rel. diff", "FAIL vs reference", "FAIL vs own FD"]]
    for leaf in report.leaves:
        mine = own.get(leaf.path)
        rows.append([leaf.path, str(leaf.shape), f"{leaf.size:,}",
                     f"{leaf.relative_difference:.1e}", str(leaf.n_fail),
                     "-" if mine is None else str(mine.n_fail)])
    return table(rows, right={2, 3, 4, 5})


# ------------------------------------------------------------------------------- dispatch

Renderer = tuple[Callable[["Report"], str], Callable[["Report"], list[str]]]
RENDERERS: dict[str, Renderer] = {
    "full": (_full_verdict, _full_table),
    "sample": (_sample_verdict, _sample_table),
    "fast": (_fast_verdict, _fast_table),
    "reference": (_reference_verdict, _reference_table),
}


def _renderer(report: Report) -> Renderer:
    # `info["renderer"]` where a report is not one mode's (a kernel against its reference)
    return RENDERERS[report.info.get("renderer", report.info.get("mode", "full"))]


def verdict_line(report: Report) -> str:
    """The report's first line: OK or FAIL, where, and the classic relative difference."""
    return _renderer(report)[0](report)


def render_text(report: Report, max_failures: int | None = None) -> str:
    """The verdict line, the per-leaf table and the worst `max_failures` components
    (default: the report's own `max_failures`)."""
    limit = report.max_failures if max_failures is None else max_failures
    verdict, leaf_table = _renderer(report)
    return "\n".join([verdict(report), ""] + leaf_table(report) + _worst(report, limit))
