"""The result of `check_jacobian` (and of `check(..., order=2)`): blocks, failures, text.

A Jacobian is compared block by block: one block per (analytic source, output leaf, input
leaf). Arrays are flat, of shape (output size, input size), indexed row-major like the leaves'
`ravel()`; a complex leaf counts as its real view (real part, imaginary part per entry).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..numerics.results import VerdictTable, relative_difference
from ..numerics.verdicts import FAIL
from .bands import band_of
from .report import VerdictSummary
from .text import table

_PARTS = ("real", "imag")


def locate(flat: int, shape: tuple[int, ...], is_complex: bool) -> tuple[tuple[int, ...], str]:
    """(index, part) of a flat real-view index: part is "", "real" or "imag"."""
    view = shape + (2,) if is_complex else shape
    index = tuple(int(i) for i in (np.unravel_index(flat, view) if view else ()))
    if is_complex:
        return index[:-1], _PARTS[index[-1]]
    return index, ""


def entry_name(prefix: str, path: str, index: tuple[int, ...], part: str) -> str:
    text = prefix + path + (f"[{', '.join(map(str, index))}]" if index else "")
    return text + (f".{part}" if part else "")


@dataclasses.dataclass(frozen=True)
class JacobianFailure:
    """One failing Jacobian entry ∂ output[output_index] / ∂ input[input_index].

    `output_part` / `input_part` are `"real"` or `"imag"` for complex leaves, else `""`.
    `ad` names the analytic side: `"rev"` (`jax.jacrev`), `"fwd"` (`jax.jacfwd`),
    `"vjp_fn"`, `"jvp_fn"` or `"jac_fn"`.
    """

    ad: str
    output_path: str
    output_index: tuple[int, ...]
    input_path: str
    input_index: tuple[int, ...]
    analytic: float
    numerical: float
    tolerance: float
    output_part: str = ""
    input_part: str = ""
    output_name: str = "out"      # "grad" for `check(..., order=2)`

    @property
    def excess(self) -> float:
        """|analytic − numerical| / tolerance: how far outside its tolerance (> 1)."""
        return abs(self.analytic - self.numerical) / self.tolerance if self.tolerance else np.inf

    @property
    def location(self) -> str:
        """E.g. `out['y'][2] wrt ['w'][0, 1]` (`out` is the function's output)."""
        output = entry_name(self.output_name, self.output_path, self.output_index,
                            self.output_part)
        return output + " wrt " + entry_name("", self.input_path, self.input_index,
                                             self.input_part)


@dataclasses.dataclass(frozen=True, eq=False)
class JacobianBlock(VerdictTable):
    """Verdicts of one block: output leaf `output_path` by input leaf `input_path`."""

    ad: str
    output_path: str
    output_shape: tuple[int, ...]
    output_complex: bool
    input_path: str
    input_shape: tuple[int, ...]
    input_complex: bool
    analytic: np.ndarray     # (output size, input size), real views
    numerical: np.ndarray
    tolerance: np.ndarray
    status: np.ndarray
    output_name: str = "out"

    @property
    def size(self) -> int:
        return int(self.status.size)

    @property
    def relative_difference(self) -> float:
        return self._compared_relative_difference()

    def failures(self) -> list[JacobianFailure]:
        out = []
        for i, j in zip(*np.nonzero(self.status == FAIL)):
            o_index, o_part = locate(int(i), self.output_shape, self.output_complex)
            i_index, i_part = locate(int(j), self.input_shape, self.input_complex)
            out.append(JacobianFailure(
                self.ad, self.output_path, o_index, self.input_path, i_index,
                float(self.analytic[i, j]), float(self.numerical[i, j]),
                float(self.tolerance[i, j]), o_part, i_part, self.output_name))
        return out


@dataclasses.dataclass(frozen=True, eq=False)
class JacobianReport(VerdictSummary):
    """What `jaxcheck.check_jacobian` found; the same reading as `jaxcheck.Report`.

    - `ok`: False iff at least one Jacobian entry FAILs.
    - `relative_difference`, `band`: the classic ‖a−b‖/(‖a‖+‖b‖) over compared entries.
    - `blocks`: a `JacobianBlock` per (analytic source, output leaf, input leaf).
    - `failures`: failing entries, worst first, each localised to (output path, output index,
      input path, input index).
    - `notes`: what was not checked and why (e.g. forward mode of a `jax.custom_vjp`).
    """

    blocks: tuple[JacobianBlock, ...]
    notes: tuple[str, ...] = ()
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_failures: int = 10

    @property
    def _tables(self) -> Sequence[JacobianBlock]:
        return self.blocks

    @property
    def ok(self) -> bool:
        return all(block.n_fail == 0 for block in self.blocks)

    @property
    def relative_difference(self) -> float:
        a = [b.analytic[b.compared] for b in self.blocks]
        n = [b.numerical[b.compared] for b in self.blocks]
        if not a:
            return 0.0
        return relative_difference(np.concatenate(a), np.concatenate(n))

    @property
    def band(self) -> str:
        return band_of(self.relative_difference)

    def block(self, output_path: str, input_path: str,
              ad: str | None = None) -> JacobianBlock:
        """The block of `output_path` by `input_path` (of analytic source `ad`, if given)."""
        for b in self.blocks:
            if b.output_path == output_path and b.input_path == input_path and (
                    ad is None or b.ad == ad):
                return b
        raise KeyError(f"no block ({output_path!r}, {input_path!r}, ad={ad!r}); blocks: "
                       f"{[(b.output_path, b.input_path, b.ad) for b in self.blocks]}")

    def __str__(self) -> str:
        return render_text(self)

    def __repr__(self) -> str:
        return (f"JacobianReport(ok={self.ok}, n_fail={self.n_fail}, "
                f"n_inconclusive={self.n_inconclusive}, "
                f"relative_difference={self.relative_difference:.2e}, band={self.band!r})")


def render_text(report: JacobianReport, max_failures: int | None = None) -> str:
    limit = report.max_failures if max_failures is None else max_failures
    n = report.n_components
    rel = f"relative difference {report.relative_difference:.1e} ({report.band})"
    kinks = (f"; {report.n_inconclusive:,} inconclusive at kinks"
             if report.n_inconclusive else "")
    if report.ok:
        head = f"jaxcheck: OK - all {n:,} Jacobian entries within tolerance; {rel}{kinks}"
    else:
        head = (f"jaxcheck: FAIL - {report.n_fail:,} of {n:,} Jacobian entries outside "
                f"tolerance, worst {report.failures[0].location}; {rel}{kinks}")
    lines = [head]
    lines += [f"note: {note}" for note in report.notes]
    if report.blocks:
        rows = [["ad", "output", "input", "shape", "rel. diff", "FAIL", "INCONCLUSIVE"]]
        for b in report.blocks:
            rows.append([b.ad, b.output_name + b.output_path, b.input_path or "(params)",
                         f"{b.analytic.shape}", f"{b.relative_difference:.1e}",
                         str(b.n_fail), str(b.n_inconclusive)])
        lines += [""] + table(rows, right={4, 5, 6})
    failures = report.failures
    if failures and limit:
        lines += ["", f"worst entries ({min(limit, len(failures))} of {len(failures):,}):"]
        rows = [["ad", "entry", "analytic", "numerical", "tolerance", "|a-n|/tol"]]
        for f in failures[:limit]:
            rows.append([f.ad, f.location, f"{f.analytic:+.6e}", f"{f.numerical:+.6e}",
                         f"{f.tolerance:.1e}", f"{f.excess:.1e}"])
        lines += table(rows, right={2, 3, 4, 5})
    return "\n".join(lines)
