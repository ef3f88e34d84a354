"""Nondeterminism: `fn` and `grad_fn` must give the same values every time at the same point.

Finite differences compare values of `fn` computed by different compiled programs (one per
leaf) with a gradient computed by yet another. A loss that draws its randomness outside its
arguments (`np.random`, a global counter turned into a PRNG key, the clock) gets a new draw at
every trace, so those values belong to different functions and every verdict would be noise.
So `check` compares two evaluations of each, as cheaply as it can:

- `fn`: traced twice in every mode, as `grad_fn` is; in full mode every leaf's compiled
  program also evaluates f(θ) anyway, and those values must agree within rounding (different
  fusion and summation order), far below what a new dropout mask changes (where every leaf
  shares one program, `numerics.dispatch` traces fn twice instead);
- `grad_fn`: traced twice (no compilation); a deterministic function gives the same program
  with the same constants. If the programs differ, both are evaluated and compared.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from .._errors import NondeterminismError
from ..inputs.placement import to_host
from ..inputs.traces import Memo, shapes_key
from .gradients import AnalyticGradient

_ADVICE = ("{who} must be a deterministic function of (params, *args): draw randomness such as "
           "dropout masks from a fixed PRNG key passed in args (e.g. "
           "`check(fn, params, x, jax.random.key(0))` with `fn(params, x, key)`), not from "
           "np.random, a global counter or the clock.")


def tolerance(eps: float) -> float:
    """Relative difference two evaluations may show: √ε (1.5e-8 in float64, 3.5e-4 in float32).

    Reordered sums of n terms differ by at most ~n·ε; √ε covers n up to 1/√ε terms, while a
    different random draw changes a loss or gradient by far more (a dropout mask: ~1e-2).
    """
    return float(np.sqrt(eps))


# Two differently compiled programs sum in different orders: their values may differ by many
# standard deviations of one program's rounding noise, but a different random draw moves the
# loss by far more than that.
NOISE_MULTIPLE = 100.0


def same_loss(value: float, reference: float, eps_f: float, noise: float = 0.0) -> bool:
    """Whether two values of `fn` at the same point agree within rounding.

    `noise` is a measured rounding-noise level of `fn`: a loss whose terms cancel (≈ 0 from
    terms of size 1) carries rounding far above √ε·|f|.
    """
    allowed = tolerance(eps_f) * max(abs(value), abs(reference)) + NOISE_MULTIPLE * noise
    return bool(np.isfinite(value - reference) and abs(value - reference) <= allowed)


def require_same_loss(value: float, reference: float, eps_f: float, noise: float = 0.0) -> None:
    """Raise `NondeterminismError` if two values of `fn` at one point differ beyond rounding."""
    scale = max(abs(value), abs(reference))
    if not same_loss(value, reference, eps_f, noise):
        raise NondeterminismError(
            f"fn: two evaluations at the same params (by the compiled programs of two "
            f"leaves) gave {reference!r} and {value!r} "
            f"(relative difference {abs(value - reference) / max(scale, 1e-300):.1e}, more than "
            f"rounding allows, {tolerance(eps_f):.1e}). " + _ADVICE.format(who="fn"))


def _trace(f: Callable[..., Any], example: Sequence[Any]) -> tuple[str, list[np.ndarray]]:
    # A fresh function object: JAX caches traces by function identity.
    return _contents(jax.make_jaxpr(lambda *a: f(*a))(*example))


def _contents(closed: Any) -> tuple[str, list[np.ndarray]]:
    return str(closed.jaxpr), [np.asarray(c) for c in closed.consts]


# keys (`inputs.traces.shapes_key`) of the functions found deterministic: a repeated check
# reuses the programs compiled from its first call's traces, so it need not trace again
_deterministic: Memo[bool] = Memo()


def require_same_traces(who: str, f: Callable[..., Any], example: Sequence[Any],
                        eps: float, first: Any = None, key: Any = None) -> None:
    """Trace `f` twice; where the programs differ, evaluate both ways and compare values.

    Randomness drawn in Python (np.random, a global key counter) is frozen into each trace as
    a constant, so two traces of such a function differ. `first`: a ClosedJaxpr of `f` at
    `example` traced already (saves one trace). `key`: where given, a function found
    deterministic under it before is not traced again.
    """
    if key is not None and key in _deterministic:
        return
    _require_same_traces(who, f, example, eps, first)
    if key is not None:
        _deterministic.put(key, True)


def _require_same_traces(who: str, f: Callable[..., Any], example: Sequence[Any],
                         eps: float, first: Any) -> None:
    try:
        text_a, consts_a = _trace(f, example) if first is None else _contents(first)
        text_b, consts_b = _trace(f, example)
    except Exception:
        return
    if text_a == text_b and len(consts_a) == len(consts_b):
        if all(a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
               for a, b in zip(consts_a, consts_b)):
            return
        raise NondeterminismError(
            f"{who}: two traces at the same params hold different constants (values drawn "
            f"while tracing). " + _ADVICE.format(who=who))
    values = [jax.tree_util.tree_leaves(f(*example)) for _ in range(2)]
    for a, b in zip(*values):
        a, b = to_host(a).astype(np.float64), to_host(b).astype(np.float64)
        scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)))
        diff = float(np.max(np.abs(a - b), initial=0.0))
        if diff > tolerance(eps) * scale or not np.isfinite(diff):
            raise NondeterminismError(
                f"{who}: two evaluations at the same params differ (max difference {diff:.1e} "
                f"relative to the largest value {scale:.1e}; rounding allows "
                f"{tolerance(eps):.1e}). " + _ADVICE.format(who=who))


def require_deterministic(analytic: AnalyticGradient, eps_f: float, eps_g: float,
                          trace_fn: bool = True, fn_trace: Any = None) -> None:
    """The checks that need no leaf's values: two traces of `grad_fn`, and of `fn` unless
    `trace_fn` is False (full mode with several leaves compares the f(θ) that every leaf's
    program computes anyway, which is cheaper than tracing)."""
    problem = analytic.problem
    params, args = problem.params, problem.args
    example = (analytic.params.dynamic, analytic.arg_dynamic)
    if trace_fn:
        require_same_traces("fn", problem.loss, example, eps_f, first=fn_trace,
                            key=shapes_key(problem, *example, "fn"))
    if analytic.grad_fn is not None:
        grad_fn = analytic.grad_fn
        require_same_traces(
            "grad_fn", lambda pd, ad: grad_fn(params.rebuild(pd), *args.rebuild(ad)),
            example, eps_g, key=shapes_key(problem, *example, "grad_fn", grad_fn))
