"""The result of `check_rules`: one `RuleCheck` per check, and its text.

Data only, with one renderer (`render_rules`): a verdict line, a line per check (status,
values compared, notes) and the findings, worst first.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..rules.results import FAIL, RuleCheck, RuleFinding


@dataclasses.dataclass(frozen=True, eq=False)
class RulesReport:
    """What `jaxcheck.check_rules` found.

    - `ok`: False iff some check FAILs (a check that does not apply, say the transpose
      identity of a `jax.custom_vjp`, which has no JVP, is `NOT_APPLICABLE` with a note).
    - `checks`: a `RuleCheck` per check run (`name`, `status`, `findings`, `notes`,
      `compared`), in the order "transpose", "batching", "compilation", "contracts",
      "linearize", "third_order".
    - `findings`: every `RuleFinding` (check, what was compared, location, expected and
      actual value, tolerance, message), worst first.
    - `check(name)`: the `RuleCheck` of that name; `failed`: the names of the failing
      checks.
    """

    checks: tuple[RuleCheck, ...]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.checks if c.status == FAIL)

    @property
    def findings(self) -> tuple[RuleFinding, ...]:
        found = [f for c in self.checks for f in c.findings]
        return tuple(sorted(found, key=lambda f: -f.excess))

    def check(self, name: str) -> RuleCheck:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; checks: {[c.name for c in self.checks]}")

    def __str__(self) -> str:
        return render_rules(self)

    def __repr__(self) -> str:
        return f"RulesReport(ok={self.ok}, failed={self.failed!r})"


def _value(x: Any) -> str:
    return f"{x:.6e}" if isinstance(x, float) else str(x)


def render_rules(report: RulesReport, max_findings: int = 10) -> str:
    """The report as text: verdict, one line per check, the worst findings."""
    if report.ok:
        head = "jaxcheck rules: PASS - every rule check is consistent"
    else:
        head = (f"jaxcheck rules: FAIL - {', '.join(report.failed)}; worst: "
                f"{report.findings[0].check} {report.findings[0].location or '(whole)'}")
    lines = [head, ""]
    for c in report.checks:
        lines.append(f"  {c.name:<12} {c.status:<15} {c.compared:>6} compared"
                     + (f"  ({'; '.join(c.notes)})" if c.notes else ""))
    findings = report.findings
    if findings:
        lines += ["", f"findings ({min(len(findings), max_findings)} of {len(findings)}):"]
        for f in findings[:max_findings]:
            tol = "" if f.tolerance is None else f", tolerance {f.tolerance:.2e}"
            lines.append(f"  [{f.check}] {f.what} at {f.location or '(whole)'}: expected "
                         f"{_value(f.expected)}, got {_value(f.actual)}{tol}"
                         + (f" - {f.message}" if f.message else ""))
    return "\n".join(lines)
