"""A leaf to check (`LeafTask`): everything a mode or method needs to examine one leaf.

Every mode and method receives its leaves as tasks, and evaluates them through
`evaluation.points`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..inputs.problem import Problem
from .gradients import AnalyticGradient


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
    f_reference: float | None = None
    # Rounding of the gradient's final cast to a low-precision dtype (e.g. bfloat16), when its
    # arithmetic (eps_g) ran in a higher precision: ≤ ε/2 relative, entry by entry.
    eps_g_out: float = 0.0
    # Native precision: each leaf gets the sharpest valid estimate (the complex step where fn
    # is complex-analytic, Ridders' extrapolation where a PASS is weak), not the float64
    # path's central differences alone.
    sharp: bool = False

    @property
    def leaf(self) -> Any:
        return self.param_dynamic[self.position]


