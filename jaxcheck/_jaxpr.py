"""Everything jaxcheck reads from jaxprs, and every JAX primitive name it depends on.

Primitive names and equation parameters are JAX internals that change between releases
(`pjit` became `jit`; `custom_vjp_call_jaxpr` became `custom_vjp_call`). Four parts of the
pipeline read jaxprs: the precision a function computes in (`inputs/precision`), the rounding
of a gradient's final cast (`inputs/final_cast`), the complex step's guard against
non-analytic operations (`numerics/complex_step`) and the interpreter that follows a change
through the loss (`evaluation/local_changes`). They walk jaxprs and name primitives only
through this module, so a JAX release that renames something is fixed here, once.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.extend.core as jcore

# ------------------------------------------------------------------- primitive names

CONVERT = "convert_element_type"
DOT = "dot_general"
BROADCAST = "broadcast_in_dim"
REDUCE_SUM = "reduce_sum"
TRANSPOSE = "transpose"
RESHAPE = "reshape"
SQUEEZE = "squeeze"
CONV = "conv_general_dilated"
GATHER = "gather"
DYNAMIC_SLICE = "dynamic_slice"
SLICE = "slice"
SCATTER_ADD = "scatter-add"
# Primitives affine in each operand alone, with coefficients of magnitude 1 (each output entry
# is one input entry, a sum of entries, or a sum or difference with the other operand).
AFFINE_MOVES = frozenset({"transpose", "reshape", "broadcast_in_dim", "squeeze", "expand_dims",
                          "convert_element_type", "copy", "copy_p", "reduce_sum", "neg", "add",
                          "sub", "slice"})
MUL = "mul"
DIV = "div"
# Reductions over `axes` (a change on the kept axes stays there; `reduce_sum` has its own rule).
REDUCTIONS = frozenset({"reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin",
                        "reduce_and", "reduce_or"})
# Sliding-window reductions of one operand (pooling): an axis of window 1 is kept.
WINDOW_REDUCTIONS = frozenset({"reduce_window_sum", "reduce_window_max", "reduce_window_min"})
# Scans along `axis` (a change on the other axes stays there).
CUMULATIVE = frozenset({"cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"})
# Calls whose value is their body's (a jit; `pjit` and `closed_call` in older releases).
CALLS = frozenset({"jit", "pjit", "closed_call"})
# A custom_jvp/custom_vjp call evaluated without differentiation is its primal function, and
# a checkpoint its body.
CUSTOM_CALLS = frozenset({"custom_jvp_call", "custom_vjp_call"})
CHECKPOINTS = frozenset({"remat2", "checkpoint"})
# Linear primitives whose sum of term magnitudes is the primitive applied to |inputs| minus
# the signs: a difference a − b combines |a| + |b|, a negation |a|.
SUB = "sub"
NEG = "neg"
# Elementwise primitives: a slab of the inputs gives the same slab of the output.
ELEMENTWISE = frozenset("""
    abs acos acosh add asin asinh atan atan2 atanh cbrt ceil clamp convert_element_type copy
    copy_p cos cosh div eq erf erf_inv erfc exp exp2 expm1 floor ge gt integer_pow is_finite
    le log log1p logistic lt max min mul ne neg nextafter not or pow rem round rsqrt select_n
    sign sin sinh sqrt square sub tan tanh and xor stop_gradient reduce_precision
""".split())
# Primitives that are not complex-analytic (or drop the imaginary part) when fed a complex value.
NON_ANALYTIC = frozenset({
    "abs", "sign", "conj", "real", "imag", "max", "min", "reduce_max", "reduce_min",
    "argmax", "argmin", "clamp", "sort", "cummax", "cummin", "eq", "ne", "lt", "le", "gt",
    "ge", "round", "floor", "ceil", "reduce_precision", "pure_callback", "io_callback",
})


# ------------------------------------------------------------------- reading equations


def name(eqn: Any) -> str:
    """The equation's primitive name."""
    return eqn.primitive.name


def var_dtype(var: Any) -> Any | None:
    """The dtype of a jaxpr variable or literal (None if it has none)."""
    return getattr(getattr(var, "aval", None), "dtype", None)


def _open(value: Any) -> Iterator[Any]:
    if hasattr(value, "eqns"):
        yield value
    elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
        yield value.jaxpr
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _open(v)


def sub_jaxprs(eqn: Any) -> Iterator[Any]:
    """Every jaxpr nested in the equation's parameters (bodies of calls, loops, branches)."""
    for param in eqn.params.values():
        yield from _open(param)


def equations(jaxpr: Any) -> Iterator[Any]:
    """Every equation of `jaxpr`, and of the jaxprs nested in it, depth first."""
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in sub_jaxprs(eqn):
            yield from equations(sub)


def custom_rule_kinds(jaxpr: Any) -> set[str]:
    """Which custom differentiation rules `jaxpr` calls, nested calls included: a subset of
    {"custom_jvp", "custom_vjp"}."""
    kinds = {name(eqn) for eqn in equations(jaxpr)} & CUSTOM_CALLS
    return {kind.removesuffix("_call") for kind in kinds}


def call_body(eqn: Any) -> tuple[Any, Sequence[Any]] | None:
    """(jaxpr, consts) of a call whose value is its body's, evaluated without
    differentiation (a jit, a custom_jvp/custom_vjp call, a checkpoint), or None."""
    kind, params = name(eqn), eqn.params
    if kind in CALLS:
        body = params.get("jaxpr", params.get("call_jaxpr"))
    elif kind in CUSTOM_CALLS:
        body = params.get("call_jaxpr")
    elif kind in CHECKPOINTS:
        body = params.get("jaxpr")
    else:
        return None
    if body is None:
        return None
    if hasattr(body, "consts"):       # a ClosedJaxpr
        return body.jaxpr, body.consts
    return body, ()


def bind(eqn: Any, invals: Sequence[Any], **overrides: Any) -> Any:
    """Apply the equation's primitive to `invals` under the config it was traced with (as
    `jax.core.eval_jaxpr` does); a list of outputs if it has several."""
    params = {**eqn.primitive.get_bind_params(eqn.params), **overrides}
    with eqn.ctx.manager:
        return eqn.primitive.bind(*invals, **params)


def multiple_results(eqn: Any) -> bool:
    return bool(eqn.primitive.multiple_results)


def is_literal(v: Any) -> bool:
    return isinstance(v, jcore.Literal)


def is_var(v: Any) -> bool:
    return isinstance(v, jcore.Var)


def is_dropped(v: Any) -> bool:
    return isinstance(v, jcore.DropVar)


def trace(f: Any, *example: Any) -> Any:
    """`f` traced to a ClosedJaxpr at `example` inputs (arrays or shape/dtype structs)."""
    return jax.make_jaxpr(f)(*example)


# ------------------------------------------------------------------- cost


def _size(v: Any) -> int:
    shape = getattr(getattr(v, "aval", None), "shape", ())
    n = 1
    for d in shape:
        n *= int(d)
    return n


def cost(eqn: Any) -> float:
    """A rough cost of one equation: multiply-adds of a product or convolution, the elements
    an elementwise, reduction or data-movement operation reads or writes otherwise (nested
    jaxprs counted once per iteration of a scan)."""
    kind, params = name(eqn), eqn.params
    out = sum(_size(v) for v in eqn.outvars)
    if kind == DOT:
        (lc, _), _ = params["dimension_numbers"]
        shape = eqn.invars[0].aval.shape
        contracted = 1
        for d in lc:
            contracted *= int(shape[d])
        return 2.0 * out * contracted
    if kind == CONV:
        rhs = eqn.invars[1].aval.shape
        outputs = int(rhs[params["dimension_numbers"].rhs_spec[0]])
        per_output = _size(eqn.invars[1]) // max(1, outputs)
        return 2.0 * out * per_output
    if kind in (GATHER, DYNAMIC_SLICE, SLICE):
        return float(out)   # reads only what it returns
    nested = list(sub_jaxprs(eqn))
    if nested:
        inner = sum(cost(e) for sub in nested for e in sub.eqns)
        return float(inner * int(params.get("length", 1)))
    return float(max([out] + [_size(v) for v in eqn.invars]))
