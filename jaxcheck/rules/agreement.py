"""Two computations of the same leaves, compared: the findings every check reports.

`compare_leaves` judges two lists of arrays entry by entry against
`rounding.elementwise_tolerance` and reports, per leaf outside it, the worst entry (both
values, its tolerance, and how many entries of the leaf are outside). `attempt` turns a
transformation that raises (a `vmap` of a bwd that cannot batch, a `jit` of a rule that needs
concrete values) into a finding of the check, with the exception's type and first line.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from .results import RuleFinding
from .rounding import elementwise_tolerance

T = TypeVar("T")


def entry(prefix: str, path: str, index: tuple[int, ...] = ()) -> str:
    """E.g. `vjp['w'][1, 2]`."""
    return prefix + path + (f"[{', '.join(map(str, index))}]" if index else "")


def compare_leaves(check: str, what: str, prefix: str, paths: Sequence[str],
                   expected: Sequence[Any], actual: Sequence[Any], eps: float, ops: int,
                   safety: float, terms: Sequence[Any] | None = None
                   ) -> tuple[list[RuleFinding], int]:
    """Findings for the leaves where `actual` differs from `expected` beyond rounding, and
    the number of entries compared. `terms`: per leaf, the magnitudes of the terms each entry
    is summed from (`magnitudes.term_magnitudes`), where known."""
    findings, compared = [], 0
    per_leaf = list(terms) if terms is not None else [None] * len(paths)
    for path, a, b, m in zip(paths, expected, actual, per_leaf):
        a = np.asarray(a, np.float64)
        b = np.asarray(b, np.float64)
        if a.shape != b.shape:
            findings.append(RuleFinding(check, what + " (shape)", entry(prefix, path),
                                        str(a.shape), str(b.shape), None,
                                        f"{what}: shapes differ"))
            continue
        compared += a.size
        tol = elementwise_tolerance(a, b, eps, ops, safety, m)
        same_nan = np.isnan(a) & np.isnan(b)
        bad = ~((np.abs(a - b) <= tol) | same_nan)
        if not bad.any():
            continue
        excess = np.where(bad, np.nan_to_num(np.abs(a - b) / np.maximum(tol, 1e-300),
                                             nan=np.inf), -1.0)
        k = int(np.argmax(excess))
        index = tuple(int(i) for i in np.unravel_index(k, a.shape)) if a.shape else ()
        findings.append(RuleFinding(
            check, what, entry(prefix, path, index), float(a.reshape(-1)[k]),
            float(b.reshape(-1)[k]), float(tol.reshape(-1)[k]),
            f"{what}: {int(bad.sum())} of {a.size} entries outside rounding"))
    return findings, compared


def attempt(check: str, what: str, thunk: Callable[[], T],
            findings: list[RuleFinding]) -> T | None:
    """`thunk()`, or None with a finding naming the exception it raised."""
    try:
        return thunk()
    except Exception as e:  # any failure of a transformation is a finding of its check
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        findings.append(RuleFinding(check, what, "", None, None, None,
                                    f"{what} raised {type(e).__name__}: {first}"))
        return None
