"""The report of a loss checked term by term: the sum's report and one per named term."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from .report import Report
from .text import render_text


@dataclasses.dataclass(frozen=True, eq=False)
class TermsReport(Report):
    """A `Report` for the sum of named loss terms, with one `Report` per term in `terms`.

    The inherited fields (`leaves`, `failures`, `relative_difference`, ...) are those of the
    sum; `ok` is False iff the sum or any term has a failing component.
    """

    terms: Mapping[str, Report] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return super().ok and all(term.ok for term in self.terms.values())

    @property
    def failing_terms(self) -> tuple[str, ...]:
        """Names of the terms with at least one failing component."""
        return tuple(name for name, term in self.terms.items() if not term.ok)

    def __str__(self) -> str:
        lines = ["sum of " + " + ".join(self.terms) + ":", render_text(self), ""]
        for name, term in self.terms.items():
            lines.append(f"term {name!r}: " + render_text(term).splitlines()[0])
        return "\n".join(lines)
