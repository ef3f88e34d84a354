"""Output vectors of a `VectorProblem` at points where one input entry is moved (Jacobians)."""
from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..inputs.vector_problem import VectorProblem
from .engine import choose_batch_size


@functools.partial(jax.jit, static_argnums=(0, 1))
def _outputs_batch(problem: VectorProblem, position: int, param_dynamic, arg_dynamic,
                   indices, values):
    base = param_dynamic[position]
    flat = base.reshape(-1)

    def one(i, v):
        dynamic = list(param_dynamic)
        dynamic[position] = flat.at[i].set(v).reshape(base.shape)
        return problem.outputs(dynamic, arg_dynamic)

    return jax.vmap(one)(indices, values)


def output_batch_size(problem: VectorProblem, leaf: Any, n_points: int,
                      requested: Optional[int] = None) -> int:
    """Batch size for `n_points` perturbations of `leaf`, from `_engine`'s memory budget."""
    return choose_batch_size(int(leaf.size) + problem.output.size,
                             np.dtype(leaf.dtype).itemsize, n_points, requested)


def evaluate_outputs(problem: VectorProblem, position: int, param_dynamic: Sequence[Any],
                     arg_dynamic: Sequence[Any], indices: np.ndarray, values: np.ndarray,
                     batch_size: Optional[int]) -> np.ndarray:
    """Output vectors (m, n_out), float64, with component `indices[k]` of leaf `position`
    set to `values[k]`: one compiled program per (problem, leaf, batch size), like `_engine`."""
    m = len(indices)
    leaf = param_dynamic[position]
    batch = output_batch_size(problem, leaf, m, batch_size)
    pad = (-m) % batch
    # Padding entries evaluate the unperturbed point; their results are dropped.
    indices = np.concatenate([indices, np.zeros(pad, indices.dtype)]).astype(np.int32)
    first = np.asarray(leaf).reshape(-1)[:1]
    values = np.concatenate([values, np.repeat(first, pad)]).astype(leaf.dtype)
    param_dynamic, arg_dynamic = tuple(param_dynamic), tuple(arg_dynamic)
    outs = [
        _outputs_batch(problem, position, param_dynamic, arg_dynamic,
                       jnp.asarray(indices[s:s + batch]), jnp.asarray(values[s:s + batch]))
        for s in range(0, m + pad, batch)
    ]
    return np.concatenate([np.asarray(o, np.float64) for o in outs])[:m]
