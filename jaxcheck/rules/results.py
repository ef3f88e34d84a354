"""What the rule checks hand to the report: one `RuleCheck` per check, with its findings.

A check PASSes, FAILs (at least one finding) or does not apply (`NOT_APPLICABLE`, with a
note saying why: a `jax.custom_vjp` has no JVP, so neither the transpose identity nor
`linearize` applies to it).
"""
from __future__ import annotations

import dataclasses
from typing import Any

PASS, FAIL, NOT_APPLICABLE = "PASS", "FAIL", "NOT_APPLICABLE"

# The checks, in the order they run and are reported.
CHECKS = ("transpose", "batching", "compilation", "contracts", "linearize", "third_order")


@dataclasses.dataclass(frozen=True)
class RuleFinding:
    """One inconsistency: which check, what was compared, where, both values and the
    tolerance.

    - `check`: one of `"transpose"`, `"batching"`, `"compilation"`, `"contracts"`,
      `"linearize"`, `"third_order"`.
    - `what`: the comparison, e.g. `"<c, jvp(t)> vs <vjp(c), t>"`, `"vmap(vjp) vs loop"`,
      `"cotangent dtype"`, `"zero cotangent"`.
    - `location`: the leaf and index it applies to, e.g. `"vjp['w'][3]"`,
      `"out['y'] wrt ['w']"`; `""` where it has none.
    - `expected`, `actual`: both values (numbers, or dtype/shape strings for the contracts),
      the first from the reference side of `what`.
    - `tolerance`: the largest difference rounding alone explains (0 for exact contracts,
      None where the values are not numbers).
    - `message`: a sentence for the report (an exception's type and first line, when a
      transformation raised).
    """

    check: str
    what: str
    location: str
    expected: Any
    actual: Any
    tolerance: float | None
    message: str = ""

    @property
    def excess(self) -> float:
        """|expected − actual| / tolerance for numbers (inf when the tolerance is 0 or the
        values are not numbers): how far outside its tolerance."""
        try:
            diff = abs(float(self.expected) - float(self.actual))
        except (TypeError, ValueError):
            return float("inf")
        if diff != diff:  # NaN
            return float("inf")
        return diff / self.tolerance if self.tolerance else float("inf")


@dataclasses.dataclass(frozen=True)
class RuleCheck:
    """The outcome of one check: `status` (PASS, FAIL, NOT_APPLICABLE), its `findings`,
    `notes` (what was compared, what did not apply and why) and `compared`, the number of
    values compared."""

    name: str
    status: str
    findings: tuple[RuleFinding, ...] = ()
    notes: tuple[str, ...] = ()
    compared: int = 0

    @property
    def ok(self) -> bool:
        return self.status != FAIL


def outcome(name: str, findings: list[RuleFinding], notes: list[str], compared: int,
            applicable: bool = True) -> RuleCheck:
    """A `RuleCheck` whose status follows from its findings."""
    if findings:
        status = FAIL
    elif not applicable:
        status = NOT_APPLICABLE
    else:
        status = PASS
    return RuleCheck(name, status, tuple(findings), tuple(notes), compared)
