"""Nondeterminism: `fn` and `grad_fn` must give the same values every time at the same point.

Finite differences compare values of `fn` computed by different compiled programs (one per
leaf) with a gradient computed by yet another. A loss that draws its randomness outside its
arguments (`np.random`, a global counter turned into a PRNG key, the clock) gets a new draw at
every trace, so those values belong to different functions and every verdict would be noise.
`check` therefore evaluates `fn` (and `grad_fn`) a second time, eagerly, and compares with the
compiled values it computes anyway; two evaluations of a deterministic function differ only
by rounding (different fusion and summation order), far below what a new dropout mask changes.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ._engine import Problem
from ._gradients import AnalyticGradient, extract_checked


class NondeterminismError(ValueError):
    """`fn` or `grad_fn` returned different values when evaluated twice at the same point."""


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


def eager_loss(problem: Problem, param_dynamic: Sequence[Any],
               arg_dynamic: Sequence[Any]) -> float:
    """`fn` evaluated op by op (a program other than the batched one the check compiles)."""
    return float(np.asarray(problem.loss(param_dynamic, arg_dynamic), np.float64))


def require_same_loss(compiled: float, eager: float, eps_f: float) -> None:
    """Raise `NondeterminismError` if two values of `fn` at the same point differ beyond rounding."""
    scale = max(abs(compiled), abs(eager))
    if abs(compiled - eager) > tolerance(eps_f) * scale or not np.isfinite(compiled - eager):
        raise NondeterminismError(
            f"fn: two evaluations at the same params gave {eager!r} and {compiled!r} "
            f"(relative difference {abs(compiled - eager) / max(scale, 1e-300):.1e}, more than "
            f"rounding allows, {tolerance(eps_f):.1e}). " + _ADVICE.format(who="fn"))


def require_same_gradient(analytic: AnalyticGradient, compiled: Sequence[np.ndarray],
                          eps_g: float) -> None:
    """Evaluate `grad_fn` eagerly and compare with its compiled values, leaf by leaf."""
    if analytic.grad_fn is None:  # jax.grad(fn): covered by the check of fn
        return
    user = Problem(analytic.grad_fn, analytic.problem.params, analytic.problem.args)
    eager = extract_checked(user.loss(analytic.params.dynamic, analytic.arg_dynamic),
                            analytic.params, "grad_fn")
    for path, a, b in zip(analytic.params.paths, compiled, eager):
        scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)))
        diff = float(np.max(np.abs(a - b), initial=0.0))
        if diff > tolerance(eps_g) * scale or not np.isfinite(diff):
            k = int(np.argmax(np.abs(a - b))) if a.size else 0
            raise NondeterminismError(
                f"grad_fn: two evaluations at the same params differ in leaf {path}: "
                f"component {k} (flat) is {float(b.reshape(-1)[k])!r} and then "
                f"{float(a.reshape(-1)[k])!r} (max difference {diff:.1e} relative to the leaf's "
                f"largest entry {scale:.1e}; rounding allows {tolerance(eps_g):.1e}). "
                + _ADVICE.format(who="grad_fn"))
