"""The result of a check: `Report`, the per-leaf results of the numerics gathered.

Data only: its text, JSON, HTML and plots are renderers of this data (`text`, `formats`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..numerics.results import LeafReport, relative_difference
from . import formats, text
from .bands import band_of
from .rules import RulesReport, render_rules


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
class Report(VerdictSummary):
    """What `jaxcheck.check` found.

    - `ok`: False iff at least one component FAILs.
    - `relative_difference`: the classic ‖a−b‖/(‖a‖+‖b‖) over all compared components, and
      `band` its row of the classic table ("excellent", "ok", "suspicious", "wrong").
    - `leaves`: a `LeafReport` per checked leaf (path as `jax.tree_util.keystr` prints it).
    - `failures`: failing components, worst (furthest outside its tolerance) first.
    - `rules`: with `check(..., rules=True)`, the `RulesReport` of `check_rules` on `fn`
      (then `ok` also needs every rule check to pass); else None.
    """

    leaves: tuple[LeafReport, ...]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_failures: int = 10
    rules: RulesReport | None = None

    @property
    def _tables(self) -> Sequence[LeafReport]:
        return self.leaves

    @property
    def ok(self) -> bool:
        return all(leaf.ok for leaf in self.leaves) and (self.rules is None or self.rules.ok)

    @property
    def relative_difference(self) -> float:
        """‖a−n‖/(‖a‖+‖n‖) over the values every leaf's verdict was decided on (each shared
        test counted once; see `LeafReport.compared_values`)."""
        owners = {}
        for leaf in self.leaves:
            owner, a, n = leaf.compared_values()
            owners.setdefault(id(owner), (a, n))
        if not owners:
            return 0.0
        return relative_difference(np.concatenate([a for a, _ in owners.values()]),
                                   np.concatenate([n for _, n in owners.values()]))

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
        rules = "" if self.rules is None else "\n\n" + render_rules(self.rules)
        return text.render_text(self) + rules

    def to_dict(self, max_failures: int | None = None) -> dict[str, Any]:
        """The report as JSON-serialisable data, schema `"jaxcheck.report/1"`: `ok`,
        `relative_difference`, `band`, counts, `info`, `leaves` and `failures` (worst first; at
        most `max_failures`, default all). Documented in `jaxcheck._render`."""

        return formats.to_dict(self, max_failures)

    def to_json(self, indent: int | None = 2, max_failures: int | None = None) -> str:
        """`to_dict()` as a JSON string (strict JSON: non-finite numbers are `null`)."""

        return formats.to_json(self, indent, max_failures)

    def _repr_html_(self) -> str:
        # Notebooks display this: a coloured verdict, the per-leaf table, the worst components.

        return formats.to_html(self)

    def plot(self, leaves: Sequence[str] | None = None) -> Any:
        """A matplotlib `Figure` (needs the `plot` extra): per-leaf relative difference against
        the classic bands, and an analytic-vs-numerical scatter per leaf (`leaves`: the paths to
        scatter; default all, at most 12)."""

        return formats.plot(self, leaves)

    def __repr__(self) -> str:
        return (f"Report(ok={self.ok}, n_fail={self.n_fail}, "
                f"n_inconclusive={self.n_inconclusive}, "
                f"relative_difference={self.relative_difference:.2e}, band={self.band!r})")
