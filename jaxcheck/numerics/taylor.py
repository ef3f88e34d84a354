"""The Taylor test: a scale-free signal of whether g is the gradient along a direction.

For a smooth loss and the true gradient, the remainder R(h) = |f(θ+hu) − f(θ) − h·u·g| is
O(h²): dividing h by 8 divides it by 64 (order 2). If u·g is wrong by δ, R(h) ≈ |h·δ| + O(h²)
and dividing h by 8 only divides it by 8 once h·|δ| dominates (order 1). The observed order
log(R(h)/R(h/8)) / log 8 needs no tolerance and no knowledge of the loss's scale (Farrell et
al., *Automated derivation of the adjoint of high-level transient finite element programs*, 2013,
§4; dolfin-adjoint's `taylor_test`). It is reported per leaf beside the verdicts, not used for
them: an error much smaller than h·|f''| leaves the order at 2 for every step above round-off.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from ..evaluation import engine
from ..evaluation.directions import Directions, linear_bound, losses_along, whole_direction
from ..inputs.placement import flat, to_device
from ..inputs.problem import Problem
from . import differences as d
from .direction_checks import HOEFFDING_Z

# Steps t_max·8⁻ʲ, j = 0..2: a factor 64 between the largest and smallest in 3 evaluations
# (each can cost a forward pass; an order needs two steps above round-off, and the smallest
# sees the smallest errors); with f(θ), 4 rows: two groups of `directions.STEPS`, or one
# program for all leaves (`taylor_tests`, where each leaf's change is followed through the
# loss), or points of the joint test's program (`joint.joint_screen(..., taylor=True)`).
LEVELS = 3
RATIO = 8.0
# A remainder is used only where it is this many times its round-off (the loss values carry
# ~2ε|f| each and the predicted change h·u·g its own rounding).
ABOVE_NOISE = 10.0


@dataclasses.dataclass(frozen=True, eq=False)
class TaylorResult:
    """Remainders R(h) along one direction of a leaf and the orders they show."""

    steps: np.ndarray
    remainders: np.ndarray
    noise: np.ndarray          # round-off level of each remainder

    @property
    def orders(self) -> np.ndarray:
        """log R(hⱼ)/R(hⱼ₊₁) ÷ log hⱼ/hⱼ₊₁ between successive steps (NaN where a remainder is
        at noise)."""
        r, ok = self.remainders, self.remainders > ABOVE_NOISE * self.noise
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.log2(r[:-1] / r[1:]) / np.log2(self.steps[:-1] / self.steps[1:])
        return np.where(ok[:-1] & ok[1:], out, np.nan)

    @property
    def order(self) -> float | None:
        """The order at the smallest pair of steps above round-off; None if there is none."""
        usable = np.flatnonzero(np.isfinite(self.orders))
        return float(self.orders[usable[-1]]) if usable.size else None

    @property
    def consistent(self) -> bool | None:
        """True if the remainder shrinks as h² (or faster), False if as h; None if unknown."""
        order = self.order
        return None if order is None else order > 1.5


def _remainder_rows(problem: Problem, positions: tuple[int, ...], leaves: tuple[int, ...],
                    param_dynamic, arg_dynamic, gs, roundings, seed, ts):
    """Per leaf L: the loss at θ and then at θ + t·u_L for t in ts with only L moved (u_L: L's
    direction 0), g·(P − θ) at each (0 at θ), u_L·g_L and ‖u_L∘A_L‖
    (`directions.losses_along`); f(θ) once for all leaves (a first layer's leaf at t = 0
    would cost a forward pass of its own).

    One program for all leaves: the unperturbed values that each leaf's local changes start
    from are the same computations, which XLA merges, so they are computed once."""
    f0 = problem.loss(param_dynamic, arg_dynamic)
    out = []
    for position, leaf, g, a in zip(positions, leaves, gs, roundings):
        theta = flat(param_dynamic[position])
        u = whole_direction(seed, jnp.uint32(leaf), jnp.int32(0), theta)
        gu = jnp.sum(u * g)
        f, g_step = losses_along(problem, position, param_dynamic, arg_dynamic, u, ts, g, gu)
        out.append((jnp.concatenate([f0[None].astype(f.dtype), f]),
                    jnp.concatenate([jnp.zeros(1, g_step.dtype), g_step]), gu,
                    jnp.sqrt(jnp.sum((u * linear_bound(g, a)) ** 2))))
    return out


def taylor_levels(eps_f: float) -> np.ndarray:
    """ε^(1/5)·2·8⁻ʲ, j < LEVELS."""
    return 2.0 * d.relative_step(eps_f, d.RICHARDSON_EXPONENT) / RATIO ** np.arange(LEVELS)


def taylor_result(f, g_step, spread: float, steps: np.ndarray,
            eps_f: float) -> tuple[float, TaylorResult]:
    """f(θ) and the Taylor result from the rows (0, steps...) of one direction."""
    f, g_step = np.asarray(f, np.float64), np.asarray(g_step, np.float64)
    f0, f, gd = float(f[0]), f[1:], g_step[1:]
    rounding = HOEFFDING_Z * spread   # of u·g, as in the directional checks
    remainders = np.abs(f - f0 - gd)
    noise = 4.0 * eps_f * np.maximum(abs(f0), np.abs(f)) + rounding * steps
    return f0, TaylorResult(steps, remainders, noise)


def taylor_test(dirs: Directions, number: int, eps_f: float) -> tuple[float, TaylorResult]:
    """f(θ) as the leaf's program computes it, and the remainders along direction `number` of
    the whole leaf (one `Directions.along` call)."""
    steps = taylor_levels(eps_f)
    m = steps.size + 1
    r = dirs.along(np.full(m, number), np.zeros(m, np.int64), np.full(m, dirs.size),
                   np.concatenate([[0.0], steps]))
    return taylor_result(r.f, r.g_step, float(r.spread[0]), steps, eps_f)


def taylor_tests(problem: Problem, positions: Sequence[int], leaf_numbers: Sequence[int],
                 param_dynamic: Sequence[Any], arg_dynamic: Sequence[Any],
                 gs: Sequence[Any], roundings: Sequence[Any], seed: int,
                 eps_f: float) -> list[tuple[float, TaylorResult]]:
    """`taylor_test` along direction 0 of every leaf, in one program (`_remainder_rows`): for
    large params, whose joint test builds each leaf's direction on its own
    (`joint.one_vector` false); smaller ones run these points in the joint program."""
    steps = taylor_levels(eps_f)
    dtype = np.dtype(param_dynamic[positions[0]].dtype)
    rows = engine.call(
        _remainder_rows, (problem, tuple(positions), tuple(leaf_numbers)), tuple(param_dynamic),
        tuple(arg_dynamic), tuple(jnp.asarray(g, dtype) for g in gs),
        tuple(to_device(r, dtype) for r in roundings), to_device(seed, np.uint32),
        to_device(steps, dtype))
    return [taylor_result(f, g_step, float(spread), steps, eps_f) for f, g_step, _, spread in rows]
