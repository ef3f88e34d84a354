"""The slope of the loss along the gradient under test: a whole-leaf check in native precision.

A gradient scaled by 1 + δ as a whole is off by δ·|gᵢ| in every component, and in float32 a
component's estimate, limited by f's rounding σ/h, may not resolve δ = 1e-4. Along
u = g/‖g‖ the errors add up instead: u·g − ∂ᵤf = δ·‖g‖ (times u's scale), while the
estimate's rounding stays σ/h, so the error stands ‖g‖/|gᵢ| times higher above it (√n for
entries alike). The line θ + t·u goes through the one escalation (`escalation.decide`,
with `sharp=True`), as a component or a random direction does; the points are rounded to
the working dtype and each loss value is corrected to first order to θ + t·u, as fast mode's
directions are (`direction_checks`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from ..evaluation import engine
from ..evaluation.directions import losses_along
from ..inputs.placement import flat, to_host
from ..plan.tasks import LeafTask
from . import differences as d
from . import verdicts as v
from .escalation import central_levels, decide

# Steps per compiled call (the calls' lengths vary; one program serves them all).
CHUNK = 16
# Ridders ladders averaged per estimate (`escalation.decide`): one line per leaf, so its
# rounding can be bought down by 1/√8 for 16 ladders of 16 evaluations.
LADDERS = 8


@dataclasses.dataclass(frozen=True)
class AlongGradient:
    """The leaf's check along its gradient: u·g, the loss's slope along u, the tolerance, and
    the verdict (`verdicts.PASS` / `INCONCLUSIVE` / `FAIL`)."""

    analytic: float
    numerical: float
    tolerance: float
    status: int


def _along(problem, position, param_dynamic, arg_dynamic, u, ts, g):
    return losses_along(problem, position, param_dynamic, arg_dynamic, u, ts, g,
                        jnp.sum(u * g))


class GradientLine:
    """The line θ + t·u of one leaf, u along the gradient under test (an `escalation.Line`)."""

    def __init__(self, task: LeafTask, u: np.ndarray, g: np.ndarray):
        dtype = np.dtype(task.leaf.dtype)
        self.task, self.dtype = task, dtype
        self.u, self.g = u.astype(dtype), g.astype(dtype)
        self.gu = float(np.sum(self.u.astype(np.float64) * self.g.astype(np.float64)))

    def losses(self, rows: np.ndarray, offsets: np.ndarray,
               strict: bool = True) -> tuple[np.ndarray, np.ndarray]:
        # non-finite values are returned: a refined step that leaves f's domain is not used
        ts = np.asarray(offsets, np.float64)
        n = ts.size
        padded = np.zeros(max(CHUNK, -(-n // CHUNK) * CHUNK))
        padded[:n] = ts
        task = self.task
        f, g_step = engine.call(_along, (task.problem, task.position),
                                tuple(task.param_dynamic), tuple(task.arg_dynamic),
                                jnp.asarray(self.u), jnp.asarray(padded, self.dtype),
                                jnp.asarray(self.g))
        f = to_host(f).astype(np.float64)[:n]
        g_step = to_host(g_step).astype(np.float64)[:n]
        return f - (g_step - ts * self.gu), ts

    def slopes(self, rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        task = self.task
        theta = to_host(flat(task.leaf))
        out = np.empty(len(offsets))
        for k, t in enumerate(offsets):
            dynamic: list[Any] = list(task.param_dynamic)
            point = (theta + np.asarray(t, self.dtype) * self.u).astype(self.dtype)
            dynamic[task.position] = jnp.asarray(point.reshape(task.leaf.shape))
            g = task.analytic.leaves(dynamic)[task.leaf_number].reshape(-1)
            out[k] = float(np.sum(g * self.u.astype(np.float64)))
        return out


def check_along_gradient(task: LeafTask, g_leaf: np.ndarray, f0: float) -> AlongGradient | None:
    """The leaf's verdict along u = s·g/‖g‖ (s = max(1, rms |θ|): steps sized like the
    components'); None where g is zero."""
    g = g_leaf.reshape(-1)
    norm = float(np.linalg.norm(g))
    if not norm > 0:
        return None
    theta = to_host(flat(task.leaf)).astype(np.float64)
    scale = max(1.0, float(np.sqrt(np.mean(theta ** 2))))
    line = GradientLine(task, g / norm * scale, g)
    u = line.u.astype(np.float64)
    # the gradient's rounding along u: Σ|uᵢ|·Aᵢ (u follows g's signs: no cancellation)
    a = np.array([float(np.sum(np.abs(u) * v.analytic_rounding(task.eps_g, g,
                                                               task.eps_g_out)))])
    rows = np.arange(1)
    first = central_levels(line, rows, [np.array([task.rel_step])], strict=False)[0]
    finest = np.array([d.relative_step(task.eps_f, d.RICHARDSON_EXPONENT)
                       / 2.0 ** (d.RICHARDSON_LEVELS - 1)])
    with np.errstate(invalid="ignore"):
        decision = decide(line, np.array([line.gu]), a, f0, first, finest, task.eps_f,
                          task.safety, sharp=True, ladders=LADDERS)
    verdicts = decision.verdicts
    return AlongGradient(line.gu, float(verdicts.numerical[0]), float(verdicts.tolerance[0]),
                         int(verdicts.status[0]))
