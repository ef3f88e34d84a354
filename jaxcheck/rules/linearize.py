"""Linearize: `jax.linearize` agrees with `jax.jvp`.

`jax.linearize` evaluates the JVP rules once, partially: what depends on the primals now,
the tangent part staged as a linear function for later. Its primal output must equal `fn`'s
and its linear map must equal `jax.jvp` at random tangents (a rule whose tangent part is not
linear, or that depends on whether its tangent is known, breaks this). A `jax.custom_vjp`
has no JVP, so the check does not apply to a `fn` that contains one.
"""
from __future__ import annotations

import jax

from .agreement import attempt, compare_leaves
from .results import RuleCheck, RuleFinding, outcome
from .rounding import operation_count, working_epsilon
from .subject import Settings, Subject

NAME = "linearize"


def check_linearize(s: Subject, settings: Settings) -> RuleCheck:
    if not s.has_jvp:
        return outcome(NAME, [], ["fn contains a jax.custom_vjp, which has no JVP: "
                                  "jax.linearize does not apply"], 0, applicable=False)
    rng = settings.rng(NAME)
    xs = s.xs
    eps = working_epsilon(s.outputs, xs, xs)
    ops = operation_count(s.jvp, xs, s.zeros_like(xs))
    findings: list[RuleFinding] = []
    linear = attempt(NAME, "jax.linearize", lambda: jax.linearize(s.outputs, xs), findings)
    if linear is None:
        return outcome(NAME, findings, [], 0)
    y, f_jvp = linear
    found, compared = compare_leaves(NAME, "linearize primal vs fn", "out",
                                     s.floating_out_paths, s.outputs(xs), y, eps, ops,
                                     settings.safety)
    findings += found
    for _ in range(settings.pairs):
        ts = s.random_like(xs, rng)
        by_jvp = attempt(NAME, "jax.jvp", lambda ts=ts: s.jvp(xs, ts), findings)
        by_lin = attempt(NAME, "linearized map", lambda ts=ts: list(f_jvp(ts)), findings)
        if by_jvp is None or by_lin is None:
            break
        found, k = compare_leaves(NAME, "linearize(t) vs jvp(t)", "jvp", s.floating_out_paths,
                                  by_jvp, by_lin, eps, ops, settings.safety,
                                  s.terms("jax.jvp", xs, ts))
        findings += found
        compared += k
        if found:
            break
    return outcome(NAME, findings, [f"jax.linearize against jax.jvp at {settings.pairs} "
                                    "random tangents"], compared)
