"""Sample mode: full mode's per-component method on m random components of each leaf.

A spot check (CS231n notes, "gradient checks": check a few random dimensions): cost 2m
evaluations per leaf (plus 6 for each component not already within round-off) instead of 2n.
It proves nothing about the components it does not draw: a single wrong entry among n is
found with probability m/n. The draw is reproducible: component indices come from
`numpy.random.default_rng((seed, leaf number))`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..plan.tasks import LeafTask
from .components import check_components
from .results import LeafReport


def sample_indices(n: int, m: int, seed: int, leaf_number: int) -> np.ndarray:
    """m distinct flat indices of a leaf of n components (all of them if m ≥ n), sorted."""
    if m >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng((seed, leaf_number))
    return np.sort(rng.choice(n, size=m, replace=False)).astype(np.int64)


def check_all_sample(tasks: Sequence[LeafTask], m: int,
                     seed: int) -> tuple[tuple[LeafReport, ...], dict[str, Any]]:
    leaves, evaluations = [], 0
    for task, g in zip(tasks, tasks[0].analytic.leaves()):
        g = g.reshape(-1)
        idx = sample_indices(g.size, m, seed, task.leaf_number)
        result = check_components(task, g, idx)
        evaluations += result.evaluations
        leaves.append(LeafReport(task.path, tuple(task.leaf.shape), task.dtype, g[idx],
                                 result.numerical, result.tolerance, result.status,
                                 indices=idx))
    return tuple(leaves), {"samples": m, "evaluations": evaluations}
