"""A leaf to check (`LeafTask`), and the loss at points where one of its entries is moved.

Every mode and method receives its leaves as tasks; `evaluate_points` is their one way to the
batched engine (`_engine.evaluate`), with the errors a user reads when fn misbehaves there.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from ._engine import Problem, evaluate, leaf_batch_size
from ._gradients import AnalyticGradient
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


class NonFiniteLossError(ValueError):
    """The loss is NaN or Inf at θ or at a perturbed point."""


def evaluate_points(task: LeafTask, indices: np.ndarray, values: np.ndarray,
                    batch: int, strict: bool = True) -> np.ndarray:
    """Loss values (float64) with entry `indices[k]` of the task's leaf set to `values[k]`.
    A non-finite value raises `NonFiniteLossError` (with `strict`) or is returned as is."""
    with user_call("fn", f"under jax.vmap at perturbed values of params{task.path}"):
        out = evaluate(task.problem, task.position, task.param_dynamic, task.arg_dynamic,
                       indices, values, batch)
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size and strict:
        k = int(indices[bad[0]])
        if values[bad[0]] == np.asarray(task.leaf).reshape(-1)[k]:  # θ itself, unperturbed
            raise non_finite_loss(float(out[bad[0]]))
        index = np.unravel_index(k, task.leaf.shape) if task.leaf.ndim else ()
        raise NonFiniteLossError(
            f"fn returned {out[bad[0]]} at params{task.path}{list(map(int, index))} = "
            f"{float(values[bad[0]])!r} (a perturbed point); finite differences need a loss "
            f"that is finite near params")
    return out


def batch_for(task: LeafTask, n_points: int) -> int:
    """The engine's batch size for `n_points` perturbations of the task's leaf."""
    return leaf_batch_size(task.param_dynamic, task.position, n_points, task.batch_size)
