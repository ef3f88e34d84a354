"""Output vectors of a `VectorProblem` at points where one input entry is moved (Jacobians)."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..inputs.vector_problem import VectorProblem
from .engine import MovedEntry, batch_size, run


@dataclasses.dataclass(frozen=True)
class EntryOutputs(MovedEntry):
    """`problem`'s flat output vector with entry `i` of leaf `position` set to `v`."""

    problem: VectorProblem

    def copied_bytes(self, shared):
        leaf = shared[0][self.position]
        return (int(leaf.size) + self.problem.layout.size) * np.dtype(leaf.dtype).itemsize

    def variants(self, shared):
        return [self._direct]

    def _direct(self, shared, i, v):
        param_dynamic, arg_dynamic = shared
        base = param_dynamic[self.position]
        dynamic = list(param_dynamic)
        dynamic[self.position] = base.reshape(-1).at[i].set(v).reshape(base.shape)
        return self.problem.outputs(dynamic, arg_dynamic)


def output_batch_size(problem: VectorProblem, position: int, shared: Any, n_points: int,
                      requested: int | None = None) -> int:
    """The engine's batch size for `n_points` perturbations of leaf `position`."""
    return batch_size(EntryOutputs(problem, position), shared, n_points, requested)


def evaluate_outputs(problem: VectorProblem, position: int, param_dynamic: Sequence[Any],
                     arg_dynamic: Sequence[Any], indices: np.ndarray, values: np.ndarray,
                     batch_size: int) -> np.ndarray:
    """Output vectors (m, n_out), float64, with component `indices[k]` of leaf `position`
    set to `values[k]`."""
    return run(EntryOutputs(problem, position), (tuple(param_dynamic), tuple(arg_dynamic)),
               (indices, values), batch_size)
