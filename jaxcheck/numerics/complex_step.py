"""Full mode with the complex step (`method="complex"`).

For a real-analytic loss, f(θ + i·h·eₖ) = f(θ) + i·h·∂ₖf(θ) − h²/2·∂ₖ²f(θ) + O(h³), so
Im f(θ + i·h·eₖ)/h = ∂ₖf(θ) + O(h²) with no subtraction of nearby values: no cancellation, and h
can be tiny (Squire & Trapp, SIAM Review 40, 1998; Martins, Sturdza & Alonso, ACM TOMS 29, 2003).
With h = ε·max(1,|θₖ|) the truncation is ~ε², and the estimate is as accurate as the loss's own
arithmetic: ~1e-7 relative in float32, where no real difference gets better than ~1e-5.

It silently gives wrong values through operations that are not complex-analytic (`abs`, `max`,
`sign`, comparisons, `real`/`imag`, casts to a real dtype): `abs(x + i·h)` is real, so its
derivative vanishes. Two guards make sure it never decides a verdict then:

1. the complexified jaxpr of `fn` is scanned for such operations on complex values;
2. every component's complex-step value must be accepted by the central-difference check
   (its error model, kinks included) as the gradient, i.e. agree with the central difference
   within the central difference's own error bound.

A leaf that fails either guard is checked with central differences instead, and a
`MethodFallbackWarning` says why.
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _jaxpr
from .._errors import MethodFallbackWarning
from ..evaluation.engine import Kernel, batch_size, run
from ..inputs.placement import to_host
from ..inputs.problem import Problem
from ..plan.tasks import LeafTask
from . import verdicts as v
from .full import FirstPass, check_leaf, first_pass
from .results import LeafReport

# The operations the guard refuses (`_jaxpr` names them; a module attribute so tests can
# switch the guard off and see the second one act).
NON_ANALYTIC = _jaxpr.NON_ANALYTIC
# Rounding of a derivative: each component carries ~ε·(|∂ₖf| + ‖∂f‖) like an analytic gradient,
# plus ~ε·Σₙ|∂ₖℓₙ| for cancellation in the sum over samples f = Σₙ ℓₙ (at an optimum ∂ₖf ≈ 0
# but the terms are not). For ℓₙ convex in θₖ, |∂ℓₙ| ≤ √(2ℓₙ·∂²ℓₙ) (equality for squares), and
# by Cauchy–Schwarz Σₙ|∂ₖℓₙ| ≤ √(2·f·∂ₖ²f): a bound from the loss and its curvature alone.
CANCELLATION_FACTOR = 4.0


def _complex_dtype(dtype: Any) -> np.dtype:
    return np.result_type(dtype, np.complex64)


@dataclasses.dataclass(frozen=True)
class ComplexStep(Kernel):
    """f(θ + i·h·eᵢ) as (Im f / h, Re f): a point is `(i, h)`."""

    problem: Problem
    position: int

    def point_specs(self, shared):
        real = np.finfo(_complex_dtype(shared[0][self.position].dtype)).dtype
        return jax.ShapeDtypeStruct((), np.int32), jax.ShapeDtypeStruct((), real)

    def copied_bytes(self, shared):
        leaf = shared[0][self.position]
        return int(leaf.size) * np.dtype(_complex_dtype(leaf.dtype)).itemsize

    def variants(self, shared):
        return [self._one]

    def _one(self, shared, i, h):
        param_dynamic, arg_dynamic = shared
        base = param_dynamic[self.position]
        flat = base.reshape(-1).astype(_complex_dtype(base.dtype))
        dynamic = list(param_dynamic)
        dynamic[self.position] = flat.at[i].add(1j * h).reshape(base.shape)
        out = self.problem.loss(dynamic, arg_dynamic)
        return jnp.stack([jnp.imag(out) / h, jnp.real(out)])


def complex_step(problem: Problem, position: int, param_dynamic: Sequence[Any],
                 arg_dynamic: Sequence[Any], indices: np.ndarray, steps: np.ndarray,
                 requested: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Im f(θ + i·steps[k]·e_indices[k]) / steps[k] for every k (float64), in fixed batches
    (at most `requested` points each, if given), and the real parts (f(θ) up to O(h²))."""
    if len(indices) == 0:
        return np.zeros(0), np.zeros(0)
    kernel, shared = ComplexStep(problem, position), (tuple(param_dynamic), tuple(arg_dynamic))
    both = run(kernel, shared, (indices, steps),
               batch_size(kernel, shared, len(indices), requested))
    return both[:, 0], both[:, 1]


def _non_analytic(jaxpr: Any) -> set[str]:
    """The non-analytic operations `jaxpr` (or a jaxpr nested in it) applies to complex values."""
    found = set()
    for eqn in _jaxpr.equations(jaxpr):
        complex_in = any(jnp.issubdtype(_jaxpr.var_dtype(x) or np.float32, jnp.complexfloating)
                         for x in eqn.invars)
        kind = _jaxpr.name(eqn)
        if complex_in and kind in NON_ANALYTIC:
            found.add(kind)
        if complex_in and kind == _jaxpr.CONVERT and not jnp.issubdtype(
                eqn.params["new_dtype"], jnp.complexfloating):
            found.add(f"cast to {np.dtype(eqn.params['new_dtype']).name}")
    return found


def unsafe_operations(task: LeafTask) -> str | None:
    """Why the complex step cannot be trusted for this leaf, or None."""
    leaf = task.leaf

    def loss(z):
        dynamic = list(task.param_dynamic)
        dynamic[task.position] = z
        return task.problem.loss(dynamic, task.arg_dynamic)

    z = jax.ShapeDtypeStruct(leaf.shape, _complex_dtype(leaf.dtype))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's ComplexWarning on a cast to real
            closed = _jaxpr.trace(loss, z)
    except Exception as e:
        return f"fn cannot be evaluated at complex params ({type(e).__name__}: {e})"
    found = _non_analytic(closed.jaxpr)
    if found:
        return "fn applies non-analytic operations to it: " + ", ".join(sorted(found))
    return None


def complex_tolerance(task: LeafTask, g: np.ndarray, numerical: np.ndarray,
                      first: FirstPass) -> np.ndarray:
    """Tolerance of |g − complex step|: the rounding of both derivatives, × safety."""
    sum_of_terms = np.sqrt(2.0 * abs(first.f0) * first.curvature)
    cancellation = CANCELLATION_FACTOR * (task.eps_f + task.eps_g) * sum_of_terms
    return task.safety * (v.analytic_rounding(task.eps_f, numerical) + cancellation
                          + v.analytic_rounding(task.eps_g, g, task.eps_g_out))


def check_leaf_complex(task: LeafTask, g_leaf: np.ndarray,
                       first: FirstPass) -> tuple[LeafReport, str | None]:
    """The leaf's report by complex step, or by central differences with the reason why."""
    reason = unsafe_operations(task)
    if reason is not None:
        return check_leaf(task, g_leaf, first), reason
    leaf = task.leaf
    theta = to_host(leaf).astype(np.float64).reshape(-1)
    n = theta.size
    # h = ε·max(1,|θₖ|): truncation ~h²·f'''/6 is below the loss's own rounding.
    numerical, _ = complex_step(task.problem, task.position, task.param_dynamic,
                                task.arg_dynamic, np.arange(n),
                                task.eps_f * np.maximum(1.0, np.abs(theta)), task.batch_size)
    # Guard 2: central differences must accept the complex-step values as the gradient (at
    # their own tolerance: no refinement needed to accept, `sharp=False`).
    cross = check_leaf(dataclasses.replace(task, eps_g=task.eps_f, eps_g_out=0.0, sharp=False),
                       numerical, first)
    if cross.n_fail or cross.n_inconclusive:
        k = int(np.flatnonzero(cross.status != v.PASS)[0])
        return check_leaf(task, g_leaf, first), (
            f"its complex-step derivative disagrees with central differences "
            f"({cross.n_fail + cross.n_inconclusive} of {n} components, e.g. flat index {k}: "
            f"{numerical[k]:+.6e} vs {cross.numerical[k]:+.6e}); a non-analytic operation or "
            f"a kink is likely")
    g = g_leaf.reshape(-1)
    tolerance = complex_tolerance(task, g, numerical, first)
    status = np.where(np.abs(g - numerical) <= tolerance, v.PASS, v.FAIL).astype(np.int8)
    return LeafReport(task.path, tuple(leaf.shape), task.dtype, g, numerical, tolerance,
                      status), None


def check_all(tasks: Sequence[LeafTask]) -> tuple[LeafReport, ...]:
    reports, fallbacks, reference = [], [], None
    for task, g in zip(tasks, tasks[0].analytic.leaves()):
        first = first_pass(dataclasses.replace(task, f_reference=reference))
        reference = first.f0 if reference is None else reference
        report, reason = check_leaf_complex(task, g, first)
        reports.append(report)
        if reason is not None:
            fallbacks.append(f"{task.path}: {reason}")
    if fallbacks:
        warnings.warn("method='complex' fell back to central differences for "
                      + "; ".join(fallbacks), MethodFallbackWarning, stacklevel=4)
    return tuple(reports)
