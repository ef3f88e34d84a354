"""The setup every mode shares, run once per check before any leaf is examined.

- The gradient's rounding: a `grad_fn` whose arithmetic runs in a higher precision than its
  final cast (e.g. float32 sums cast to bfloat16) carries only that cast's rounding per entry
  (`eps_g_out`), not ε·Σ|terms| of low-precision arithmetic (`inputs/final_cast`).
- Determinism: `fn` and the gradient evaluated twice at params must agree within rounding
  (`determinism`); each mode then compares every leaf's f(θ) with the first's.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ..inputs.final_cast import gradient_epsilons
from ..inputs.precision import machine_epsilon
from ..inputs.problem import Problem
from ..inputs.pytree import Split
from .determinism import require_deterministic
from .gradients import AnalyticGradient
from .tasks import LeafTask


def require_mode_and_method(mode: str, method: str) -> None:
    """Full mode takes every method; fast and sample mode use central differences."""
    if mode != "full" and method != "central":
        raise ValueError(f"method: mode={mode!r} uses central differences; "
                         f"method={method!r} is available with mode='full' only")


def leaf_tasks(problem: Problem, p: Split, a: Split, analytic: AnalyticGradient,
               user_dtypes: Sequence[str], eps_f: float, eps_g: float, rel_step: float,
               safety: float, batch_size: int | None, sharp: bool = False) -> list[LeafTask]:
    """One task per checked leaf of `p`, in order (`sharp`: native precision)."""
    return [
        LeafTask(problem, position, path, user_dtype, tuple(p.dynamic), tuple(a.dynamic),
                 number, analytic, eps_f, eps_g, rel_step, safety, batch_size, sharp=sharp)
        for number, (position, path, user_dtype) in enumerate(zip(p.checked, p.paths,
                                                                   user_dtypes))
    ]


def split_gradient_rounding(tasks: Sequence[Any]) -> list[Any]:
    """Tasks whose `eps_g` covers only the gradient's arithmetic, with the final cast to a
    lower-precision dtype charged separately (`eps_g_out`). Unchanged for `jax.grad(fn)`."""
    first = tasks[0]
    analytic = first.analytic
    if analytic.grad_fn is None:
        return list(tasks)
    default = max(machine_epsilon(first.param_dynamic[t.position].dtype) for t in tasks)
    if first.eps_g <= default:
        return list(tasks)  # nothing in the gradient is less precise than the params
    arith, out = gradient_epsilons(analytic.grad_fn, analytic.problem.params,
                                   analytic.problem.args, analytic.params.dynamic,
                                   analytic.arg_dynamic, default)
    if out <= arith or arith >= first.eps_g:
        return list(tasks)  # the output is no less precise than the arithmetic
    return [dataclasses.replace(t, eps_g=arith, eps_g_out=out) for t in tasks]


def shared_setup(tasks: Sequence[LeafTask], mode: str, fn_trace: Any = None) -> list[LeafTask]:
    """Attach the gradient's rounding model and check determinism where that needs no leaf
    values, for every `mode` (full mode's methods then compare every leaf's f(θ) with the
    first's; `fn_trace`, the trace of `fn` the inputs were validated with, saves a trace)."""
    tasks = split_gradient_rounding(tasks)
    first = tasks[0]
    # full mode compares every leaf's f(θ) with the first's (`numerics/full`); fast and sample
    # mode, and a single leaf, have no second program to compare with: fn is traced twice
    compares_programs = mode == "full" and len(tasks) > 1
    require_deterministic(first.analytic, first.eps_f, max(first.eps_g, first.eps_g_out),
                          trace_fn=not compares_programs, fn_trace=fn_trace)
    return tasks
