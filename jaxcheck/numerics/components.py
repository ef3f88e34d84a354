"""Per-component verdicts on a chosen set of one leaf's components.

Full mode checks every component of a leaf this way, sample mode a random subset. A
component is the line θ + h·eᵢ; its verdict comes from `escalation.decide`, the same
escalation that fast mode's directions go through: the first pass at h₁ = ε^(1/3)·max(1, |θᵢ|),
then the measured noise, Richardson levels at two scales and the kink analysis for those not
already within round-off.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..evaluation.points import batch_for, evaluate_points
from ..inputs.placement import to_host
from ..plan.tasks import LeafTask
from . import differences as d
from . import verdicts as v
from .escalation import Level, central_levels, decide


@dataclasses.dataclass(frozen=True, eq=False)
class ComponentResults:
    """Verdicts of the components `indices` (flat, row-major) of one leaf."""

    indices: np.ndarray
    status: np.ndarray
    numerical: np.ndarray
    tolerance: np.ndarray
    evaluations: int          # loss evaluations spent
    refined: np.ndarray | None = None   # per index: decided by refined steps (escalation step 5)


class ComponentLine:
    """The lines θ + h·e_{indices[r]} of one leaf (an `escalation.Line`)."""

    def __init__(self, task: LeafTask, indices: np.ndarray, batch: int | None = None):
        self.task, self.indices = task, np.asarray(indices, np.int64)
        self.theta_w = to_host(task.leaf).reshape(-1)     # in the working dtype
        self.dtype = np.dtype(task.leaf.dtype)
        self.batch = batch if batch is not None else batch_for(task, 2 * self.indices.size + 1)
        self.evaluations = 0

    def losses(self, rows: np.ndarray, offsets: np.ndarray,
               strict: bool = True) -> tuple[np.ndarray, np.ndarray]:
        idx = self.indices[rows]
        points, taken = d.offset_points(self.theta_w[idx], offsets, self.dtype)
        self.evaluations += idx.size
        return evaluate_points(self.task, idx, points, self.batch, strict), taken

    def slopes(self, rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        idx = self.indices[rows]
        points, _ = d.offset_points(self.theta_w[idx], offsets, self.dtype)
        return self.task.analytic.components_at(self.task.leaf_number, idx, points)

    def first_steps(self) -> np.ndarray:
        return d.component_steps(self.theta_w[self.indices], self.task.rel_step)

    def extrapolation_steps(self) -> np.ndarray:
        """The finest of the Richardson levels ε^(1/5)·max(1,|θᵢ|)·(1, 1/2, 1/4)."""
        rel = d.relative_step(self.task.eps_f, d.RICHARDSON_EXPONENT)
        return (d.component_steps(self.theta_w[self.indices], rel)
                / 2.0 ** (d.RICHARDSON_LEVELS - 1))


def first_pass(line: ComponentLine, with_f0: bool) -> tuple[float | None, Level]:
    """θ ± h₁ along every line, and f(θ) in the same call when `with_f0` (the determinism
    check compares it with other leaves' programs)."""
    h = line.first_steps()
    m = line.indices.size
    rows = np.arange(m)
    if not with_f0:
        return None, central_levels(line, rows, [h])[0]
    task = line.task
    plus, minus, hp, hm = d.perturbed_points(line.theta_w[line.indices], h, line.dtype)
    vals = evaluate_points(task, np.concatenate([[0], line.indices, line.indices]),
                           np.concatenate([line.theta_w[:1], plus, minus]), line.batch)
    line.evaluations += vals.size
    return float(vals[0]), Level(vals[1:m + 1], vals[m + 1:], hp, hm)


def check_components(task: LeafTask, g_leaf: np.ndarray, indices: np.ndarray,
                     f0: float | None = None, first: Level | None = None,
                     line: ComponentLine | None = None) -> ComponentResults:
    """Verdicts for the flat `indices` of `task`'s leaf; `f0` = loss at θ if known, `first`
    the first pass along `indices` if already evaluated (by `line`)."""
    g_all = g_leaf.reshape(-1)
    idx = np.asarray(indices, np.int64)
    if idx.size == 0:   # a 0-size leaf (or no index drawn): nothing to perturb or evaluate
        none = np.zeros(0)
        return ComponentResults(idx, np.zeros(0, np.int8), none, none, 0)
    line = line if line is not None else ComponentLine(task, idx)
    a_all = v.analytic_rounding(task.eps_g, g_all, task.eps_g_out)   # ‖g‖ over the whole leaf
    if first is None:
        f0_here, first = first_pass(line, with_f0=f0 is None)
        f0 = f0_here if f0 is None else f0
    assert f0 is not None
    decision = decide(line, g_all[idx], a_all[idx], f0, first, line.extrapolation_steps(),
                      task.eps_f, task.safety, sharp=task.sharp)
    verdicts = decision.verdicts
    return ComponentResults(idx, verdicts.status, verdicts.numerical, verdicts.tolerance,
                            line.evaluations, decision.refined)
