"""Reports for people and machines: a JSON-serialisable dict, HTML for notebooks, and plots.

`Report.to_dict()`, `Report.to_json()`, `Report._repr_html_()` and `Report.plot()` delegate here,
so `report.py` stays the data.

The dict schema, `"jaxcheck.report/1"` (non-finite numbers become `null`, tuples become lists):

- `schema`: `"jaxcheck.report/1"`; a change that removes or renames a key bumps the number.
- `ok`: false iff some component FAILs. `relative_difference`: ‖a−n‖/(‖a‖+‖n‖) over the compared
  components; `band`: its row of the classic table (`"excellent"`, `"ok"`, `"suspicious"`,
  `"wrong"`).
- `n_components`, `n_fail`, `n_inconclusive`: counts over all checked leaves.
- `info`: how the check ran (`eps_f`, `eps_g`, `rel_step`, `precision`, `precision_requested`,
  `mode`, `method`, ...). `precision` is the one used (`"float64"` or `"native"`),
  `precision_requested` the option as given (`"auto"`, `"float64"` or `"native"`).
- `leaves`: per checked leaf `path`, `shape`, `dtype`, `size`, `relative_difference`, `n_fail`,
  `n_inconclusive`.
- `failures`: failing components, worst first, each `path`, `index` (into the leaf's shape),
  `analytic`, `numerical`, `tolerance` and `excess` (|analytic − numerical| / tolerance).
"""
from __future__ import annotations

import dataclasses
import html
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..numerics.results import Failure, LeafReport
from ..numerics.verdicts import FAIL, INCONCLUSIVE
from .bands import BANDS, band_of
from .text import verdict_line

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .report import Report

SCHEMA = "jaxcheck.report/1"


# ---------------------------------------------------------------------------------------- dict


def _number(x: Any) -> float | None:
    # JSON has no NaN or Infinity; `null` is the portable spelling of "no finite value".
    x = float(x)
    return x if math.isfinite(x) else None


def _plain(x: Any) -> Any:
    """`x` with numpy scalars/arrays, tuples and non-finite floats made JSON-serialisable."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray) or (hasattr(x, "__array__") and hasattr(x, "shape")):
        return _plain(np.asarray(x).tolist())  # numpy and JAX arrays
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return _number(x)
    if x is None or isinstance(x, str):
        return x
    return str(x)


def leaf_dict(leaf: LeafReport) -> dict[str, Any]:
    return {
        "path": leaf.path,
        "shape": list(leaf.shape),
        "dtype": leaf.dtype,
        "size": leaf.size,
        "relative_difference": _number(leaf.relative_difference),
        "n_fail": leaf.n_fail,
        "n_inconclusive": leaf.n_inconclusive,
    }


def failure_dict(failure: Failure) -> dict[str, Any]:
    return {
        "path": failure.path,
        "index": list(failure.index),
        "analytic": _number(failure.analytic),
        "numerical": _number(failure.numerical),
        "tolerance": _number(failure.tolerance),
        "excess": _number(failure.excess),
    }


def to_dict(report: Report, max_failures: int | None = None) -> dict[str, Any]:
    """The report as plain Python data (schema `"jaxcheck.report/1"`, see this module)."""
    if max_failures is not None and not (isinstance(max_failures, int) and max_failures >= 0):
        raise ValueError(
            f"max_failures: expected a non-negative int or None, got {max_failures!r}")
    failures = report.failures
    if max_failures is not None:
        failures = failures[:max_failures]
    return {
        "schema": SCHEMA,
        "ok": report.ok,
        "relative_difference": _number(report.relative_difference),
        "band": report.band,
        "n_components": report.n_components,
        "n_fail": report.n_fail,
        "n_inconclusive": report.n_inconclusive,
        "info": _plain(report.info),
        "leaves": [leaf_dict(leaf) for leaf in report.leaves],
        "failures": [failure_dict(f) for f in failures],
        **({} if report.rules is None else {"rules": rules_dict(report.rules)}),
    }


def rules_dict(rules: Any) -> dict[str, Any]:
    """A `RulesReport` (from `check(..., rules=True)`) as plain data: `ok`, `failed`, and per
    check its status, notes and findings."""
    return {"ok": rules.ok, "failed": list(rules.failed), "checks": [
        {"name": c.name, "status": c.status, "compared": c.compared, "notes": list(c.notes),
         "findings": [_plain(dataclasses.asdict(f)) for f in c.findings]}
        for c in rules.checks]}


def to_json(report: Report, indent: int | None = 2, max_failures: int | None = None) -> str:
    # allow_nan=False: the dict is already free of NaN/Infinity, and this keeps it that way.
    return json.dumps(to_dict(report, max_failures), indent=indent, allow_nan=False)


# ---------------------------------------------------------------------------------------- HTML

# Inline styles rather than a <style> block: notebook viewers (GitHub, nbviewer, VS Code) keep
# them, and they cannot leak into the rest of the page.
_GREEN, _RED, _AMBER = "#1a7f37", "#cf222e", "#9a6700"
_CELL = "padding:2px 8px;text-align:{align};border-bottom:1px solid #d0d7de;"
_BAND_COLOURS = {"excellent": _GREEN, "ok": _GREEN, "suspicious": _AMBER, "wrong": _RED}


def _row(cells: Sequence[str], header: bool = False, right: Sequence[int] = (),
         style: str = "") -> str:
    tag = "th" if header else "td"
    out = "".join(
        f'<{tag} style="{_CELL.format(align="right" if i in right else "left")}">{c}</{tag}>'
        for i, c in enumerate(cells))
    return f'<tr style="{style}">{out}</tr>' if style else f"<tr>{out}</tr>"


def table(header: Sequence[str], rows: Sequence[tuple[Sequence[str], str]],
           right: Sequence[int]) -> str:
    body = "".join(_row(cells, right=right, style=style) for cells, style in rows)
    return ('<table style="border-collapse:collapse;font-family:monospace;font-size:12px;'
            f'margin:4px 0">{_row(header, header=True, right=right)}{body}</table>')


def to_html(report: Report, max_failures: int | None = None) -> str:
    """A styled verdict, the per-leaf table and the worst components (all text escaped)."""
    esc = html.escape
    limit = report.max_failures if max_failures is None else max_failures
    colour = _GREEN if report.ok else _RED
    badge = (f'<span style="background:{colour};color:white;font-weight:bold;'
             f'padding:1px 8px;border-radius:4px">{"OK" if report.ok else "FAIL"}</span>')
    verdict = verdict_line(report).split(" - ", 1)[-1]
    parts = ['<div class="jaxcheck-report">',
             f'<div style="margin-bottom:4px">{badge} <b>jaxcheck</b>: {esc(verdict)}</div>']

    leaf_rows = []
    for leaf in report.leaves:
        rel = leaf.relative_difference
        band = band_of(rel)
        style = "background:#ffebe9;color:#24292f" if leaf.n_fail else ""
        leaf_rows.append(([esc(leaf.path), esc(str(leaf.shape)), esc(leaf.dtype),
                           f"{leaf.size:,}",
                           f'<span style="color:{_BAND_COLOURS[band]}">{rel:.1e}</span>',
                           str(leaf.n_fail), str(leaf.n_inconclusive)], style))
    parts.append(table(["leaf", "shape", "dtype", "size", "rel. diff", "FAIL", "INCONCLUSIVE"],
                        leaf_rows, right=(3, 4, 5, 6)))

    failures = report.failures
    if failures and limit:
        shown = failures[:limit]
        parts.append(f"<div>worst components ({len(shown)} of {len(failures):,}):</div>")
        rows = [([esc(f.location), f"{f.analytic:+.6e}", f"{f.numerical:+.6e}",
                  f"{f.tolerance:.1e}", f"{f.excess:.1e}"], "") for f in shown]
        parts.append(table(["component", "analytic", "numerical", "tolerance", "|a-n|/tol"],
                            rows, right=(1, 2, 3, 4)))
    parts.append("</div>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------- plot

# A scatter of a million points takes seconds to draw and shows nothing more than 10,000 do;
# FAIL and INCONCLUSIVE components are always drawn.
MAX_POINTS = 10_000
MAX_PANELS = 12


def _import_matplotlib() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(
            "Report.plot() needs matplotlib, which is not installed; install it with "
            "`pip install 'jaxcheck[plot]'` (or `pip install matplotlib`).") from e
    return Figure


def _points(leaf: LeafReport, rng: np.random.Generator) -> np.ndarray:
    """Indices to draw: every FAIL/INCONCLUSIVE component and a sample of the others."""
    marked = np.flatnonzero(leaf.status != 0)
    rest = np.flatnonzero(leaf.status == 0)
    room = max(MAX_POINTS - marked.size, 0)
    if rest.size > room:
        rest = np.sort(rng.choice(rest, room, replace=False))
    return np.concatenate([rest, marked])


def plot(report: Report, leaves: Sequence[str] | None = None) -> Figure:
    """A matplotlib `Figure`: per-leaf relative difference against the classic bands, then one
    analytic-vs-numerical scatter per leaf (FAIL red, INCONCLUSIVE orange).

    **Arguments:**

    - `report`: the `Report` to draw.
    - `leaves`: paths of the leaves to scatter (e.g. `["['W1']"]`). Default: all of them, or the
      12 with most failures when there are more.
    """
    Figure = _import_matplotlib()
    if leaves is None:
        chosen = list(report.leaves)
        if len(chosen) > MAX_PANELS:
            ranked = sorted(range(len(chosen)),
                            key=lambda i: (-chosen[i].n_fail, -chosen[i].relative_difference))
            chosen = [chosen[i] for i in sorted(ranked[:MAX_PANELS])]
    else:
        if isinstance(leaves, str):
            raise TypeError(f"leaves: expected a sequence of leaf paths, got the string "
                            f"{leaves!r}; wrap it in a list")
        chosen = [report.leaf(path) for path in leaves]

    ncols = min(3, max(len(chosen), 1))
    nrows = 1 + math.ceil(len(chosen) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows), layout="constrained")
    grid = fig.add_gridspec(nrows, ncols)

    # Per-leaf relative difference on the classic bands.
    ax = fig.add_subplot(grid[0, :])
    rels = np.array([max(leaf.relative_difference, 1e-18) for leaf in report.leaves])
    x = np.arange(len(report.leaves))
    lo = min(1e-12, float(rels.min()) / 10) if rels.size else 1e-12
    hi = max(1.0, float(rels.max()) * 10) if rels.size else 1.0
    lower = lo
    for (bound, name), colour in zip(BANDS + ((hi, "wrong"),),
                                     (_GREEN, "#4ac26b", _AMBER, _RED)):
        ax.axhspan(lower, bound, color=colour, alpha=0.12, lw=0)
        ax.text(1.0, math.sqrt(lower * bound), f" {name}", transform=ax.get_yaxis_transform(),
                va="center", ha="left", fontsize=8, color=colour)
        lower = bound
    colours = [_RED if leaf.n_fail else "#0969da" for leaf in report.leaves]
    ax.scatter(x, rels, c=colours, zorder=3)
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    ax.set_xticks(x, [leaf.path for leaf in report.leaves], rotation=30 if len(x) > 4 else 0,
                  fontsize=8)
    ax.set_xlim(-0.5, max(len(x) - 0.5, 0.5))
    ax.set_xlabel("leaf")
    ax.set_ylabel("relative difference")
    plural = "" if report.n_fail == 1 else "s"
    verdict = "OK" if report.ok else f"FAIL ({report.n_fail:,} component{plural})"
    ax.set_title(f"jaxcheck: {verdict}, relative difference "
                 f"{report.relative_difference:.1e} ({report.band})")

    rng = np.random.default_rng(0)
    for k, leaf in enumerate(chosen):
        ax = fig.add_subplot(grid[1 + k // ncols, k % ncols])
        idx = _points(leaf, rng)
        status = leaf.status[idx]
        a, n = leaf.analytic[idx], leaf.numerical[idx]
        colour = np.where(status == FAIL, _RED, np.where(status == INCONCLUSIVE, "#fb8f44",
                                                         "#0969da"))
        ax.scatter(n, a, c=list(colour), s=np.where(status == 0, 8, 24), zorder=3)
        finite = np.concatenate([a, n])
        finite = finite[np.isfinite(finite)]
        if finite.size:
            lo_v, hi_v = float(finite.min()), float(finite.max())
            ax.plot([lo_v, hi_v], [lo_v, hi_v], color="grey", lw=0.8, zorder=2)
        ax.set_xlabel("numerical")
        ax.set_ylabel("analytic")
        ax.set_title(f"{leaf.path}: {leaf.n_fail} FAIL", fontsize=9,
                     color=_RED if leaf.n_fail else "black")
    return fig
