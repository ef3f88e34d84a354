"""The magnitudes of the terms a derivative sums: |J|·|t| for a JVP, |Jᵀ|·|c| for a VJP.

Rounding bounds need the magnitudes of the terms a result is summed from, not of the result:
at a least-squares optimum the gradient Xᵀr/n is ~1e-8 while its terms are ~1e-2, so its
rounding error is ~ε·1e-2, a million times its own ε·|value|. A JVP or VJP is linear in its
tangent or cotangent, and every operation on the tangent is linear (sums, products with
values that do not depend on it, reshapes, gathers). Evaluating the same jaxpr with every
tangent-dependent value replaced by its absolute value, differences by sums (a − b by
|a| + |b|), negations dropped and the tangent-free values (the residuals: cos x, the
primal's activations) by their absolute values where they meet a tangent, gives for each
output entry Σ|terms|, as in Higham's running error analysis (*Accuracy and Stability of
Numerical Algorithms*, §3.3). Operations it has no rule for (loops, sorts) are evaluated on
the absolute values and their results taken absolutely: a bound no longer, an estimate.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from .. import _jaxpr


def _floating(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _abs(x: Any) -> Any:
    return jnp.abs(x) if _floating(x) else x


def term_magnitudes(f: Callable[[Any], Any], v: Any) -> list[Any]:
    """Per output leaf of `f(v)` (linear in `v`): Σ|terms| of each entry. Traceable: under
    `jax.jit` the interpretation compiles into one program."""
    closed = jax.make_jaxpr(f)(v)
    flat = jax.tree_util.tree_leaves(v)
    return [x for x, _ in _interpret(closed.jaxpr, closed.consts, flat, [True] * len(flat))]


def _interpret(jaxpr: Any, consts: Sequence[Any], args: Sequence[Any],
               linear: Sequence[bool]) -> list[tuple[Any, bool]]:
    env: dict[Any, tuple[Any, bool]] = {}
    for var, value in zip(jaxpr.constvars, consts):
        env[var] = (value, False)
    for var, value, lin in zip(jaxpr.invars, args, linear):
        env[var] = (_abs(value) if lin else value, lin)

    def read(v: Any) -> tuple[Any, bool]:
        return (v.val, False) if _jaxpr.is_literal(v) else env[v]

    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        if not any(lin for _, lin in ins):
            outs = _jaxpr.bind(eqn, [x for x, _ in ins])
            outs = outs if _jaxpr.multiple_results(eqn) else [outs]
            results = [(o, False) for o in outs]
        else:
            results = _linear_equation(eqn, ins)
        for var, result in zip(eqn.outvars, results):
            if not _jaxpr.is_dropped(var):
                env[var] = result
    return [read(v) for v in jaxpr.outvars]


def _linear_equation(eqn: Any, ins: list[tuple[Any, bool]]) -> list[tuple[Any, bool]]:
    body = _jaxpr.call_body(eqn)
    if body is not None:
        jaxpr, consts = body
        return _interpret(jaxpr, consts, [x for x, _ in ins], [lin for _, lin in ins])
    values = [_abs(x) for x, _ in ins]
    kind = _jaxpr.name(eqn)
    if kind == _jaxpr.NEG:
        return [(values[0], True)]
    if kind == _jaxpr.SUB:
        return [(values[0] + values[1], True)]
    outs = _jaxpr.bind(eqn, values)
    outs = outs if _jaxpr.multiple_results(eqn) else [outs]
    return [(_abs(o), True) for o in outs]
