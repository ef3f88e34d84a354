"""A kernel and its reference implementation evaluated side by side, at params and nearby.

`check(fn, params, *args, reference=ref)`: `fn` (and `grad_fn`) is a kernel that runs only in
its native precision, `ref` a plain implementation of the same loss. Both are evaluated at the
user's point and at a few jittered copies of it (every floating entry of params and args
multiplied by 1 ± ρ with random signs, ρ from a few ulps to 2⁻⁸ relative): the kernel in native
precision, the reference in float64 (inside `jax.enable_x64(True)`) and in native precision
too. Subtracting the float64 reference at each point leaves the kernel's own error there, so
its spread over the points measures the kernel's rounding, and the reference run in native
precision shows the rounding of another association of the same arithmetic. The jitter comes
in antithetic pairs (1 + ρs, 1 − ρs): the mean of a pair cancels the first-order change of a
smooth error, such as a bug's, so only the rounding is left in its spread.

Why jitter and not a rescaling by powers of 2: a power-of-2 scale leaves every relative
rounding error unchanged (it is exact), so it would measure nothing. Why up to 2⁻⁸: a kernel
that rounds through bfloat16 inside has errors that a float32 ulp does not move.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..inputs.placement import to_host
from ..inputs.precision import cast_floating, lowest_float_eps, machine_epsilon
from ..inputs.problem import Problem
from ..inputs.pytree import Split, replace_dynamic
from ..inputs.validation import user_call
from ..plan.gradients import AnalyticGradient

# Relative jitter of the points after the first (the user's own), in units of the working
# dtype's machine epsilon: 2³ ε (a few ulps) to 2¹⁵ ε (2⁻⁸ in float32: bfloat16's ulp), at most
# MAX_JITTER (the jitter only has to cross the roundings of the least precise dtype inside).
JITTER_ULPS = (2.0 ** 3, 2.0 ** 7, 2.0 ** 11, 2.0 ** 15)
MAX_JITTER = 2.0 ** -8


@dataclasses.dataclass(frozen=True)
class Evaluations:
    """A loss and its gradient at each point: `values[j]`, `gradients[leaf][j, k]` (flat
    components), float64 numbers on the host."""

    values: np.ndarray
    gradients: tuple[np.ndarray, ...]


@dataclasses.dataclass(frozen=True)
class ReferencePoints:
    """The kernel (native precision) and the reference (float64, and native precision) at
    point 0 (the user's) and the jittered points after it."""

    kernel: Evaluations
    reference: Evaluations
    reference_native: Evaluations
    jitter: tuple[float, ...]          # relative jitter of each point: 0 (the user's), then
                                       # +ρ and -ρ (the same signs) for each ρ


@functools.partial(jax.jit, static_argnums=0)
def _value(problem: Problem, param_dynamic: Sequence[Any], arg_dynamic: Sequence[Any]) -> Any:
    return problem.loss(param_dynamic, arg_dynamic)


def _is_floating(x: Any) -> bool:
    return hasattr(x, "dtype") and bool(jnp.issubdtype(x.dtype, jnp.floating))


def _signs(s: Split, rng: np.random.Generator) -> list[np.ndarray | None]:
    return [rng.choice(np.array([-1.0, 1.0]), size=np.shape(x)) if _is_floating(x) else None
            for x in s.dynamic]


def _jittered(s: Split, rho: float, signs: list[np.ndarray | None]) -> Split:
    """`s` with every floating entry multiplied by 1 + rho·sign, in its own dtype."""
    return replace_dynamic(s, [x if sign is None else
                               (x * (1 + rho * jnp.asarray(sign, x.dtype))).astype(x.dtype)
                               for x, sign in zip(s.dynamic, signs)])


def _evaluate(problem: Problem, p: Split, a: Split, grad_fn: Any, who: str) -> tuple[
        float, list[np.ndarray]]:
    with user_call(who, "at params (or a jittered copy) for the reference comparison"):
        value = float(to_host(_value(problem, p.dynamic, a.dynamic)))
    gradient = AnalyticGradient(problem, p, tuple(a.dynamic), grad_fn)
    return value, [g.reshape(-1) for g in gradient.leaves(p.dynamic)]


def _stack(rows: list[tuple[float, list[np.ndarray]]]) -> Evaluations:
    values = np.array([v for v, _ in rows])
    leaves = tuple(np.stack([g[i] for _, g in rows]) for i in range(len(rows[0][1])))
    return Evaluations(values, leaves)


def evaluate_side_by_side(kernel: Problem, grad_fn: Any, reference: Problem, p: Split, a: Split,
                          eps: float, seed: int) -> ReferencePoints:
    """The kernel and the reference at params and at a pair of jittered copies of params and
    args for each of `JITTER_ULPS` (`eps`: the working dtype's machine epsilon; `seed`: the
    signs)."""
    rng = np.random.default_rng(seed)
    jitter = [0.0]
    points = [(p, a)]
    for ulps in JITTER_ULPS:
        p_signs, a_signs = _signs(p, rng), _signs(a, rng)
        size = min(eps * ulps, MAX_JITTER)
        for rho in (size, -size):
            jitter.append(rho)
            points.append((_jittered(p, rho, p_signs), _jittered(a, rho, a_signs)))
    kernel_rows = [_evaluate(kernel, pj, aj, grad_fn, "fn") for pj, aj in points]
    native_rows = [_evaluate(reference, pj, aj, None, "reference") for pj, aj in points]
    with jax.enable_x64(True):   # the same points exactly, in float64
        wide = [(_float64(pj), _float64(aj)) for pj, aj in points]
        reference_rows = [_evaluate(reference, pj, aj, None, "reference") for pj, aj in wide]
    return ReferencePoints(_stack(kernel_rows), _stack(reference_rows), _stack(native_rows),
                           tuple(jitter))


def _float64(s: Split) -> Split:
    return replace_dynamic(s, [cast_floating(x, jnp.float64) for x in s.dynamic])


def float64_least_precise(reference: Problem, p: Split, a: Split) -> str | None:
    """The dtype of the least precise floating value `reference` computes when its inputs are
    float64, if that is less precise than float64 (a cast inside); None if there is none."""
    with jax.enable_x64(True):
        closed = jax.make_jaxpr(reference.loss)(_float64(p).dynamic, _float64(a).dynamic)
        eps = lowest_float_eps(closed.jaxpr)
        if eps <= machine_epsilon(jnp.float64):
            return None
        return next(str(d) for d in (jnp.float32, jnp.float16, jnp.bfloat16)
                    if machine_epsilon(d) >= eps)
