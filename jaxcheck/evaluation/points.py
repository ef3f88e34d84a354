"""The loss at points where one entry of a task's leaf is moved: the one way every mode and
method reaches the batched engine (`engine.evaluate`), with the errors a user reads when fn
misbehaves there.
"""
from __future__ import annotations

import numpy as np

from .._errors import NonFiniteLossError
from ..inputs.placement import to_host
from ..inputs.validation import non_finite_loss, user_call
from ..plan.tasks import LeafTask
from .engine import batch_size, entry_kernel, evaluate


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
        if values[bad[0]] == to_host(task.leaf.reshape(-1)[k]):  # θ itself, unperturbed
            raise non_finite_loss(float(out[bad[0]]))
        index = np.unravel_index(k, task.leaf.shape) if task.leaf.ndim else ()
        raise NonFiniteLossError(
            f"fn returned {out[bad[0]]} at params{task.path}{list(map(int, index))} = "
            f"{float(values[bad[0]])!r} (a perturbed point); finite differences need a loss "
            f"that is finite near params")
    return out


def batch_for(task: LeafTask, n_points: int) -> int:
    """The engine's batch size for `n_points` perturbations of the task's leaf."""
    kernel, _ = entry_kernel(task.problem, task.position, task.param_dynamic, task.arg_dynamic)
    return batch_size(kernel, (task.param_dynamic, task.arg_dynamic), n_points, task.batch_size)
