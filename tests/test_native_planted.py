"""Native float32 checks of JAX's own derivative rules with planted bugs (`planted_rules`).

`precision="native"` must flag the planted errors (whole gradient × (1 + 1e-4), one entry ×
(1 + 1e-3), the VJP at a point shifted by 1e-3) with no FAIL on the correct rules. The
default run checks a few rules of each kind of reference; `python -m pytest -m slow
tests/test_native_planted.py` checks every rule and plant.
"""
import warnings

import jax.numpy as jnp
import pytest
from planted_rules import RULES, Rule, loss

import jaxcheck

# A few rules of each kind: complex step (log1p, an RNN scan), Ridders extrapolation where
# the loss is not complex-analytic (erf, cholesky).
DEFAULT = ("log1p", "rnn_scan", "erf", "cholesky")


def _flagged(rule: Rule, plant: str | None) -> tuple[bool, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # e.g. a NaN warning from a probe beyond the domain
        report = jaxcheck.check(loss(rule, plant), jnp.asarray(rule.x), precision="native")
    return not report.ok, report.info.get("references", {})


def _sweep(rules):
    missed, false_alarms, planted = [], [], 0
    for rule in rules:
        if _flagged(rule, None)[0]:
            false_alarms.append(rule.name)
        for plant in rule.plants:
            planted += 1
            if not _flagged(rule, plant)[0]:
                missed.append(f"{rule.name}/{plant}")
    return missed, false_alarms, planted


@pytest.mark.parametrize("name", DEFAULT)
def test_native_flags_planted_rule_errors_and_passes_correct_rules(name):
    rule = next(r for r in RULES if r.name == name)
    missed, false_alarms, _ = _sweep([rule])
    assert false_alarms == [] and missed == []


def test_native_says_which_reference_decided_each_leaf():
    by_name = {r.name: r for r in RULES}
    assert _flagged(by_name["log1p"], None)[1] == {"": "complex step"}
    # erf has no complex implementation in JAX: real steps, refined by Ridders' tableau
    assert _flagged(by_name["erf"], None)[1] == {"": "Ridders extrapolation"}


@pytest.mark.slow
def test_native_flags_99_percent_of_planted_errors_with_no_false_alarm():
    missed, false_alarms, planted = _sweep(RULES)
    print(f"planted flagged {planted - len(missed)}/{planted}, "
          f"false alarms {len(false_alarms)}/{len(RULES)}; missed {missed}")
    assert false_alarms == []
    assert len(missed) <= 0.01 * planted, missed
