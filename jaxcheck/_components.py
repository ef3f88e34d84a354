"""The full per-component method on a chosen subset of one leaf's components.

Sample mode checks a random subset this way, and fast mode's group testing ends with it on the
few components a bisection has isolated. It is full mode's two passes (`_full.check_leaf`)
restricted to `indices`: one central difference each at h₁, then Richardson levels and the
kink analysis (`_verdicts.judge`) for those not already within round-off.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import _differences as d
from . import _verdicts as v
from ._engine import choose_batch_size
from ._full import LeafTask, _confirmed_beside_kinks, _evaluate


@dataclasses.dataclass(frozen=True, eq=False)
class ComponentResults:
    """Verdicts of the components `indices` (flat, row-major) of one leaf."""

    indices: np.ndarray
    status: np.ndarray
    numerical: np.ndarray
    tolerance: np.ndarray
    evaluations: int          # loss evaluations spent


def check_components(task: LeafTask, g_leaf: np.ndarray, indices: np.ndarray,
                     f0: float | None = None) -> ComponentResults:
    """Full-mode verdicts for the flat `indices` of `task`'s leaf; `f0` = loss at θ if known."""
    leaf = task.leaf
    dtype = np.dtype(leaf.dtype)
    theta_w = np.asarray(leaf).reshape(-1)
    theta = theta_w.astype(np.float64)
    g_all = g_leaf.reshape(-1)
    idx = np.asarray(indices, np.int64)
    m = idx.size
    batch = choose_batch_size(theta.size, dtype.itemsize, 2 * m + 1, task.batch_size)
    a_all = v.analytic_rounding(task.eps_g, g_all, task.eps_g_out)   # ‖g‖ over the whole leaf
    g, a = g_all[idx], a_all[idx]

    plus, minus, hp, hm = d.perturbed_points(theta_w[idx], d.component_steps(theta[idx],
                                                                          task.rel_step), dtype)
    head = [] if f0 is not None else [0]
    vals = _evaluate(task, np.concatenate([np.asarray(head, np.int64), idx, idx]),
                     np.concatenate([theta_w[:len(head)], plus, minus]), batch)
    evaluations = vals.size
    if f0 is None:
        f0, vals = float(vals[0]), vals[1:]
    fp, fm = vals[:m], vals[m:]
    screened = v.screen(g, fp, fm, hp, hm, f0, task.eps_f, a, task.safety)
    status, numerical, tolerance = (screened.status.copy(), screened.numerical.copy(),
                                    screened.tolerance.copy())

    todo = np.flatnonzero(status != v.PASS)
    if todo.size:
        rel2 = d.relative_step(task.eps_f, d.RICHARDSON_EXPONENT)
        base = d.component_steps(theta[idx[todo]], rel2)
        levels = [d.perturbed_points(theta_w[idx[todo]], base / 2.0**k, dtype)
                  for k in range(d.RICHARDSON_LEVELS)]
        values = np.concatenate([np.concatenate([p, q]) for p, q, _, _ in levels])
        out = _evaluate(task, np.tile(idx[todo], 2 * d.RICHARDSON_LEVELS), values, batch)
        evaluations += out.size
        out = out.reshape(d.RICHARDSON_LEVELS, 2, -1)
        hp2 = np.stack([lv[2] for lv in levels])
        hm2 = np.stack([lv[3] for lv in levels])
        beside = d.component_steps(theta[idx[todo]], task.rel_step)
        judged, kinks = v.judge(g[todo], f0, out[:, 0], out[:, 1], hp2, hm2, task.eps_f,
                                a[todo], task.safety, beside)
        status[todo], numerical[todo], tolerance[todo] = (judged.status, judged.numerical,
                                                          judged.tolerance)
        confirmed = _confirmed_beside_kinks(task, idx[todo], theta_w[idx[todo]], kinks, dtype)
        status[todo[confirmed]] = v.INCONCLUSIVE
    return ComponentResults(idx, status, numerical, tolerance, int(evaluations))
