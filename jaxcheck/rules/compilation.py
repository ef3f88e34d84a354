"""Compilation: `jax.jit` and eager evaluation give the same values and derivatives.

The function, its VJP (at a random cotangent) and its JVP (at a random tangent; when `fn`
has one), and the user's `jvp_fn` / `vjp_fn` when given, are evaluated eagerly (op by op,
so a custom rule sees concrete values) and under `jax.jit` (traced once, compiled, with
XLA free to fuse and reorder), and compared within rounding. A rule that depends on Python
values (a branch on a concrete array, a value read from a global, a leaked tracer) gives
different results, or raises under `jit`: both are findings.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .agreement import attempt, compare_leaves
from .results import RuleCheck, RuleFinding, outcome
from .rounding import operation_count, working_epsilon
from .subject import Settings, Subject

NAME = "compilation"


def check_compilation(s: Subject, settings: Settings) -> RuleCheck:
    rng = settings.rng(NAME)
    xs, outs = s.xs, s.cotangent_leaves()
    cs, ts = s.random_like(outs, rng), s.random_like(xs, rng)
    eps = working_epsilon(s.vjp, xs, xs, cs)
    findings: list[RuleFinding] = []
    compared = 0

    def judge(what: str, prefix: str, paths, f: Callable[..., list[Any]], *args,
              name: str = "fn") -> None:
        nonlocal compared
        eager = attempt(NAME, what + " (eager)", lambda: f(*args), findings)
        if eager is None:
            return
        compiled = attempt(NAME, what, lambda: s.compiled[name](*args), findings)
        if compiled is None:
            return
        terms = s.terms(name, *args) if name != "fn" else None
        found, k = compare_leaves(NAME, what, prefix, paths, eager, compiled, eps,
                                  operation_count(f, *args), settings.safety, terms)
        findings.extend(found)
        compared += k

    judge("jit(fn) vs eager", "out", s.floating_out_paths, s.outputs, xs)
    for name, vjp in s.vjps():
        judge(f"jit({name}) vs eager", "vjp", s.in_paths, vjp, xs, cs, name=name)
    for name, jvp in s.jvps():
        judge(f"jit({name}) vs eager", "jvp", s.floating_out_paths, jvp, xs, ts, name=name)
    return outcome(NAME, findings, ["jax.jit against eager evaluation"], compared)
