"""A gradient cast to a low precision at the end (bfloat16, float16): the rounding of that final
cast vs the rounding of low-precision arithmetic.

The check itself always runs on an upcast copy (float64 by default), so finite differences
never see a bfloat16 grid and never collapse to a zero step. What stays low-precision is what
`grad_fn` chooses: a gradient computed in float64/float32 and cast to bfloat16 at the end
carries only that final rounding, ≤ ε/2·|gᵢ| per entry (ε = 2⁻⁷ for bfloat16), whereas a
gradient whose sums run in bfloat16 carries ε·Σ|terms|. Reading the jaxpr tells the two apart;
charging the first like the second would widen every tolerance to ~10% of the leaf's norm
and hide a wrong entry that is off by a few percent.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import _jaxpr
from .precision import equation_epsilon, var_epsilon


def _arithmetic_eps(jaxpr: Any) -> float:
    """Lowest precision of the computation, leaving out casts that produce the outputs."""
    outputs = {id(v) for v in jaxpr.outvars}
    eps = 0.0
    for eqn in jaxpr.eqns:
        final = all(id(v) in outputs for v in eqn.outvars)
        if final and _jaxpr.name(eqn) == _jaxpr.CONVERT:
            continue
        body = _jaxpr.call_body(eqn) if _jaxpr.name(eqn) in _jaxpr.CALLS else None
        if final and body is not None:
            eps = max(eps, _arithmetic_eps(body[0]))
            continue
        eps = max(eps, equation_epsilon(eqn))
    return eps


def gradient_epsilons(grad_fn: Any, params: Any, args: Any, param_dynamic: Sequence[Any],
                      arg_dynamic: Sequence[Any], default: float) -> tuple[float, float]:
    """(ε of the gradient's arithmetic, ε of its output dtype), each at least `default`."""
    def call(pd, ad):
        return grad_fn(params.rebuild(pd), *args.rebuild(ad))

    try:
        closed = _jaxpr.trace(call, tuple(param_dynamic), tuple(arg_dynamic))
    except Exception:
        return default, 0.0
    jaxpr = closed.jaxpr
    out = max([0.0] + [var_epsilon(v) for v in jaxpr.outvars])
    return max(default, _arithmetic_eps(jaxpr)), out
