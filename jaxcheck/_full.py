"""Full mode: every component of every checked leaf gets its own verdict.

Per leaf: one pass of central differences at the small step h₁ = ε^(1/3)·max(1,|θᵢ|)
(2 evaluations per component, plus the unperturbed point) screens out every component
already within round-off of the analytic value; the rest get three Richardson levels at
h₂ = ε^(1/5)·max(1,|θᵢ|), h₂/2, h₂/4 (6 more evaluations each) and the full error model.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np

from . import _differences as d
from . import _verdicts as v
from ._determinism import require_same_loss, same_loss
from ._engine import Problem, evaluate, leaf_batch_size
from ._gradients import AnalyticGradient
from ._report import LeafReport
from ._validation import non_finite_loss, user_call


@dataclasses.dataclass(frozen=True)
class LeafTask:
    """Everything needed to check one leaf (the working-precision values, on device)."""

    problem: Problem
    position: int                    # index of the leaf in the params' dynamic leaves
    path: str
    dtype: str                       # the leaf's dtype as the user gave it
    param_dynamic: tuple[Any, ...]
    arg_dynamic: tuple[Any, ...]
    leaf_number: int                 # index among the checked leaves
    analytic: AnalyticGradient
    eps_f: float                     # precision the loss is computed in
    eps_g: float                     # precision the gradient is computed in
    rel_step: float                  # first-pass relative step
    safety: float
    batch_size: int | None
    # f(θ) from another leaf's compiled program, to compare with this leaf's (determinism).
    f_reference: Optional[float] = None
    # Rounding of the gradient's final cast to a low-precision dtype (e.g. bfloat16), when its
    # arithmetic (eps_g) ran in a higher precision: ≤ ε/2 relative, entry by entry.
    eps_g_out: float = 0.0

    @property
    def leaf(self) -> Any:
        return self.param_dynamic[self.position]


# |analytic − numerical| beyond this many tolerances, with no jump in slope, is a bug at any
# scale: no need to try larger steps.
GROSS_EXCESS = 100.0


class NonFiniteLossError(ValueError):
    """The loss is NaN or Inf at θ or at a perturbed point."""


def _evaluate(task: LeafTask, indices: np.ndarray, values: np.ndarray, batch: int) -> np.ndarray:
    with user_call("fn", f"under jax.vmap at perturbed values of params{task.path}"):
        out = evaluate(task.problem, task.position, task.param_dynamic, task.arg_dynamic,
                       indices, values, batch)
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        k = int(indices[bad[0]])
        if values[bad[0]] == np.asarray(task.leaf).reshape(-1)[k]:  # θ itself, unperturbed
            raise non_finite_loss(float(out[bad[0]]))
        index = np.unravel_index(k, task.leaf.shape) if task.leaf.ndim else ()
        raise NonFiniteLossError(
            f"fn returned {out[bad[0]]} at params{task.path}{list(map(int, index))} = "
            f"{float(values[bad[0]])!r} (a perturbed point); finite differences need a loss "
            f"that is finite near params")
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class FirstPass:
    """The loss at θ and at θ ± h₁ for every component of a leaf (flat, float64)."""

    f0: float
    f_plus: np.ndarray
    f_minus: np.ndarray
    h_plus: np.ndarray      # the steps actually taken
    h_minus: np.ndarray

    @property
    def curvature(self) -> np.ndarray:
        """|∂ᵢ²f| from the second difference (its round-off included: an upper estimate)."""
        slopes = (self.f_plus - self.f0) / self.h_plus - (self.f0 - self.f_minus) / self.h_minus
        return np.abs(2.0 * slopes / (self.h_plus + self.h_minus))


def _batch(task: LeafTask) -> int:
    n = int(np.prod(task.leaf.shape, dtype=np.int64))
    return leaf_batch_size(task.param_dynamic, task.position, 2 * n + 1, task.batch_size)


def first_pass(task: LeafTask) -> FirstPass:
    """Pass 1: θ itself and θ ± h₁ for every component (and the determinism check of f(θ))."""
    theta_w = np.asarray(task.leaf).reshape(-1)            # in the working dtype
    theta = theta_w.astype(np.float64)
    n = theta.size
    idx = np.arange(n, dtype=np.int64)
    plus, minus, hp, hm = d.perturbed_points(theta_w, d.component_steps(theta, task.rel_step),
                                             np.dtype(task.leaf.dtype))
    vals = _evaluate(task, np.concatenate([[0], idx, idx]),
                     np.concatenate([theta_w[:1], plus, minus]), _batch(task))
    if task.f_reference is not None:
        f0 = float(vals[0])
        if not same_loss(f0, task.f_reference, task.eps_f):  # rounding, or a different draw?
            noise = _measure_noise(task, idx, theta_w, f0, 0.5 * (hp + hm),
                                   np.dtype(task.leaf.dtype), _batch(task))
            require_same_loss(f0, task.f_reference, task.eps_f, noise)
    return FirstPass(float(vals[0]), vals[1:n + 1], vals[n + 1:], hp, hm)


def check_leaf(task: LeafTask, g_leaf: np.ndarray,
               first: Optional[FirstPass] = None) -> LeafReport:
    leaf = task.leaf
    dtype = np.dtype(leaf.dtype)
    theta_w = np.asarray(leaf).reshape(-1)            # in the working dtype
    theta = theta_w.astype(np.float64)
    g = g_leaf.reshape(-1)
    if theta.size == 0:  # a 0-size leaf has no component to perturb: an empty verdict
        return LeafReport(task.path, tuple(leaf.shape), task.dtype, g, g, g,
                          np.zeros(0, np.int8))
    batch = _batch(task)

    first = first_pass(task) if first is None else first
    f0, fp, fm, hp, hm = first.f0, first.f_plus, first.f_minus, first.h_plus, first.h_minus
    a = v.analytic_rounding(task.eps_g, g, task.eps_g_out)
    result = v.screen(g, fp, fm, hp, hm, f0, task.eps_f, a, task.safety)
    status, numerical, tolerance = (result.status.copy(), result.numerical.copy(),
                                    result.tolerance.copy())

    # Pass 2: Richardson levels 4h₁, 2h₁, h₁ (h₁ reused) for the components not yet within
    # round-off; small steps rarely straddle a kink. Pass 3: levels h₂, h₂/2, h₂/4 at the
    # step that is optimal for Richardson, for what is still undecided (noisy or kinked at the
    # small scale). A component FAILs only if it fails at every scale tried.
    undecided = np.flatnonzero(status == v.FAIL)
    finest_pass2 = Level(fp, fm, hp, hm)
    beside = 0.5 * (hp + hm)
    noise = _measure_noise(task, undecided, theta_w, f0, beside, dtype, batch)
    finest_pass3 = d.component_steps(theta, d.relative_step(task.eps_f, d.RICHARDSON_EXPONENT)
                                     ) / 2.0 ** (d.RICHARDSON_LEVELS - 1)
    for finest in (finest_pass2, finest_pass3):
        if undecided.size == 0:
            break
        judged, kinks = _judge_at_scale(task, undecided, theta_w, f0, g, a, finest, beside,
                                        noise, dtype, batch)
        judged_status = judged.status.copy()
        judged_status[_confirmed_beside_kinks(task, undecided, theta_w[undecided], kinks,
                                              dtype)] = v.INCONCLUSIVE
        status[undecided] = judged_status
        numerical[undecided], tolerance[undecided] = judged.numerical, judged.tolerance
        # A gross mismatch with no sign of a kink is a bug at any scale: stop there.
        excess = np.abs(judged.numerical - g[undecided]) / judged.tolerance
        retry = (judged_status == v.FAIL) & ((excess < GROSS_EXCESS) | kinks.unresolved)
        undecided = undecided[retry]

    return LeafReport(task.path, tuple(leaf.shape), task.dtype, g, numerical, tolerance, status)


@dataclasses.dataclass(frozen=True)
class Level:
    """Loss values at θ ± h for some components, with the exact steps taken."""

    f_plus: np.ndarray
    f_minus: np.ndarray
    h_plus: np.ndarray
    h_minus: np.ndarray

    def take(self, where: np.ndarray) -> "Level":
        return Level(self.f_plus[where], self.f_minus[where], self.h_plus[where],
                     self.h_minus[where])


NOISE_SAMPLES = 4  # components whose neighbourhood is sampled for the noise estimate


def _measure_noise(task: LeafTask, undecided: np.ndarray, theta_w: np.ndarray, f0: float,
                   step: np.ndarray, dtype: np.dtype, batch: int) -> float:
    """The rounding noise of f near θ (0 when every component was already decided)."""
    if undecided.size == 0:
        return 0.0
    where = undecided[np.linspace(0, undecided.size - 1, NOISE_SAMPLES).astype(int)]
    k = np.arange(1, d.NOISE_ORDER + 1)
    points = (theta_w[where, None].astype(np.float64)
              + k[None, :] * (d.NOISE_STEP * step[where, None])).astype(dtype)
    out = _evaluate(task, np.repeat(where, d.NOISE_ORDER), points.reshape(-1), batch)
    values = np.concatenate([np.full((where.size, 1), f0), out.reshape(where.size, -1)], 1)
    return d.noise_level(values)


def _judge_at_scale(task: LeafTask, todo: np.ndarray, theta_w: np.ndarray, f0: float,
                    g: np.ndarray, a: np.ndarray, finest, beside: np.ndarray,
                    noise: float, dtype: np.dtype, batch: int):
    """`judge` the components `todo` on Richardson levels h·2^(L-1), ..., 2h, h.

    `finest` is either the per-component finest step h (every level is evaluated) or a
    `Level` already evaluated at h (reused as the finest level).
    """
    n_levels = d.RICHARDSON_LEVELS
    reused = finest.take(todo) if isinstance(finest, Level) else None
    step = (0.5 * (reused.h_plus + reused.h_minus)) if reused else finest[todo]
    n_new = n_levels - 1 if reused else n_levels
    points = [d.perturbed_points(theta_w[todo], step * 2.0 ** (n_levels - 1 - k), dtype)
              for k in range(n_new)]
    values = np.concatenate([np.concatenate([p, m]) for p, m, _, _ in points])
    out = _evaluate(task, np.tile(todo, 2 * n_new), values, batch).reshape(n_new, 2, -1)
    levels = [Level(out[k, 0], out[k, 1], points[k][2], points[k][3]) for k in range(n_new)]
    levels += [reused] if reused else []
    stack = lambda name: np.stack([getattr(lv, name) for lv in levels])  # noqa: E731
    return v.judge(g[todo], f0, stack("f_plus"), stack("f_minus"), stack("h_plus"),
                   stack("h_minus"), task.eps_f, a[todo], task.safety, beside[todo], noise)


def _confirmed_beside_kinks(task: LeafTask, indices: np.ndarray, theta_w: np.ndarray,
                            kinks: v.Kinks, dtype: np.dtype) -> np.ndarray:
    """Mask of unresolved kinks where the analytic gradient matches the slopes beside θ."""
    confirmed = np.zeros(kinks.unresolved.shape, bool)
    where = np.flatnonzero(kinks.unresolved)
    if where.size == 0:
        return confirmed
    plus, minus, _, _ = d.perturbed_points(theta_w[where], kinks.step[where], dtype)
    g_right = task.analytic.components_at(task.leaf_number, indices[where], plus)
    g_left = task.analytic.components_at(task.leaf_number, indices[where], minus)
    sub = dataclasses.replace(kinks, right=kinks.right[where], left=kinks.left[where],
                              tolerance=kinks.tolerance[where])
    confirmed[where] = v.confirm_beside_kink(sub, g_right, g_left)
    return confirmed


def check_all(tasks: Sequence[LeafTask]) -> tuple[LeafReport, ...]:
    reports, reference = [], None
    for task, g in zip(tasks, tasks[0].analytic.leaves()):
        if task.leaf.size == 0:  # nothing to perturb: an empty verdict
            reports.append(check_leaf(task, g, None))
            continue
        # Each leaf's program computes f(θ) too: later leaves compare theirs with the first's.
        first = first_pass(dataclasses.replace(task, f_reference=reference))
        reference = first.f0 if reference is None else reference
        reports.append(check_leaf(task, g, first))
    return tuple(reports)
