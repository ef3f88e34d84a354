"""Full mode with one-sided differences (`method="forward"` or `"backward"`).

For a loss that is defined on one side of θ only (a variance at a bound, a domain edge), or to
see what the textbook forward difference gives. It never evaluates the other side.

A one-sided difference has truncation ~h·f''/2 and round-off ~2ε|f|/h, balanced at
h ≈ ε^(1/2)·max(1,|θᵢ|) (Nocedal & Wright, §8.1): the first pass uses that step and accepts
components within round-off of the analytic value. The rest get three Richardson levels
h₂ = ε^(1/3)·max(1,|θᵢ|), h₂/2, h₂/4 (after one extrapolation the error is O(h²), balanced at
ε^(1/3)); the O(h) error model: D(h) − D(h/2) is the truncation error of D(h/2), and the
spread of the two extrapolations bounds theirs.

One-sided differences see no kink at θ (they see the slope of one side). Where a component
still fails, the analytic gradient is evaluated just beside θ on the same side: if it matches
the slope there but not at θ, θ sits on a kink and the component is INCONCLUSIVE.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ..evaluation.points import batch_for, evaluate_points
from ..inputs.placement import to_host
from ..plan.determinism import require_same_loss
from ..plan.tasks import LeafTask
from . import differences as d
from . import verdicts as v
from .results import LeafReport

FIRST_PASS_EXPONENT = 1.0 / 2.0   # O(h) stencil: h ~ ε^(1/2)
RICHARDSON_EXPONENT = 1.0 / 3.0   # O(h²) after one extrapolation: h ~ ε^(1/3)


def _one_side(theta_w: np.ndarray, h: np.ndarray, dtype: np.dtype, side: int):
    """The points θ + side·h in `dtype` and the exact (positive) steps taken."""
    plus, minus, hp, hm = d.perturbed_points(theta_w, h, dtype)
    return (plus, hp) if side > 0 else (minus, hm)


def _difference(f0, f_side, h, side: int):
    return d.forward(f0, f_side, h) if side > 0 else d.backward(f0, f_side, h)


def check_leaf(task: LeafTask, g_leaf: np.ndarray, side: int) -> tuple[LeafReport, float]:
    """The leaf's report and f(θ)."""
    leaf = task.leaf
    dtype = np.dtype(leaf.dtype)
    theta_w = to_host(leaf).reshape(-1)
    theta = theta_w.astype(np.float64)
    g = g_leaf.reshape(-1)
    n = theta.size
    idx = np.arange(n, dtype=np.int64)
    batch = batch_for(task, n + 1)

    # Pass 1: θ and θ + side·h₁.
    point, h1 = _one_side(theta_w, d.component_steps(theta, task.rel_step), dtype, side)
    vals = evaluate_points(task, np.concatenate([[0], idx]), np.concatenate([theta_w[:1], point]),
                     batch)
    f0, fs = vals[0], vals[1:]
    if task.f_reference is not None:
        require_same_loss(float(f0), task.f_reference, task.eps_f)
    a = v.analytic_rounding(task.eps_g, g, task.eps_g_out)
    numerical = _difference(f0, fs, h1, side)
    f_scale = np.maximum(abs(f0), np.abs(fs))
    # Two values, each with ~2ε|f| rounding, over h: twice the central bound at equal h.
    tolerance = task.safety * (v.roundoff(task.eps_f, f_scale, 0.5 * h1) + a)
    status = np.where(np.abs(numerical - g) <= tolerance, v.PASS, v.FAIL).astype(np.int8)

    todo = np.flatnonzero(status != v.PASS)
    if todo.size:
        rel2 = d.relative_step(task.eps_f, RICHARDSON_EXPONENT)
        base = d.component_steps(theta[todo], rel2)
        levels = [_one_side(theta_w[todo], base / 2.0**k, dtype, side)
                  for k in range(d.RICHARDSON_LEVELS)]
        out = evaluate_points(task, np.tile(todo, d.RICHARDSON_LEVELS),
                        np.concatenate([p for p, _ in levels]), batch)
        out = out.reshape(d.RICHARDSON_LEVELS, -1)
        h = np.stack([hk for _, hk in levels])
        D = _difference(f0, out, h, side)
        f_scale = np.maximum(abs(f0), np.abs(out).max(0))
        r = v.roundoff(task.eps_f, f_scale, 0.5 * h)
        # O(h) error: D(h) − D(h/2) ≈ the error of D(h/2); extrapolations are O(h²).
        r1, r2 = d.richardson(D[0], D[1], 1), d.richardson(D[1], D[2], 1)
        tol_extrapolated = task.safety * (np.abs(r2 - r1) + 3.0 * r[2] + a[todo])  # 2·D2 − D1
        tol_finest = task.safety * (np.abs(D[2] - D[1]) + r[2] + a[todo])
        use = tol_extrapolated <= tol_finest
        numerical[todo] = np.where(use, r2, D[2])
        tolerance[todo] = np.minimum(tol_extrapolated, tol_finest)
        status[todo] = np.where(np.abs(numerical[todo] - g[todo]) <= tolerance[todo],
                                v.PASS, v.FAIL)
        failing = todo[status[todo] == v.FAIL]
        if failing.size:
            where = np.searchsorted(todo, failing)
            # The slope beside θ can differ from the one at θ by f''·δ: f'' ≈ 2(D₁ − D₂)/h.
            curvature = 2.0 * np.abs(D[1] - D[2])[where] / h[2][where]
            beside = d.component_steps(theta[failing], task.rel_step)
            point, step = _one_side(theta_w[failing], beside, dtype, side)
            g_beside = task.analytic.components_at(task.leaf_number, failing, point)
            ok_beside = (np.abs(g_beside - numerical[failing])
                         <= tolerance[failing] + task.safety * curvature * step)
            status[failing[ok_beside]] = v.INCONCLUSIVE

    return (LeafReport(task.path, tuple(leaf.shape), task.dtype, g, numerical, tolerance, status),
            float(f0))


def check_all(tasks: Sequence[LeafTask], side: int) -> tuple[LeafReport, ...]:
    reports, reference = [], None
    for task, g in zip(tasks, tasks[0].analytic.leaves()):
        report, f0 = check_leaf(dataclasses.replace(task, f_reference=reference), g, side)
        reference = f0 if reference is None else reference
        reports.append(report)
    return tuple(reports)
