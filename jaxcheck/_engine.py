"""Batched evaluation of the loss at perturbed points.

One leaf is perturbed at a time, so everything computed before the leaf's first use does not
depend on the batch axis and `vmap` leaves it unbatched. Each perturbation is built from its
(index, value) pair inside the mapped function: no (m, n) matrix of perturbed parameter vectors
is ever materialised. Batches have a fixed size, so one compiled program serves every batch
of a leaf, and because the compiled function is keyed on the (hashable) `Problem` and the
shapes, repeated checks of the same function reuse it (JAX's jit cache).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ._parameters import Structure

MAX_BATCH = 128
# Bytes of perturbed-leaf copies allowed per batch; activations scale with the batch too.
BATCH_MEMORY_BUDGET = 256 * 2**20


@dataclasses.dataclass(frozen=True)
class Problem:
    """`fn` with the hashable skeletons of its params and args: the compilation key."""

    fn: Callable[..., Any]
    params: Structure
    args: Structure

    def loss(self, param_dynamic: Sequence[Any], arg_dynamic: Sequence[Any]) -> Any:
        return self.fn(self.params.rebuild(param_dynamic), *self.args.rebuild(arg_dynamic))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _evaluate_batch(problem: Problem, position: int, param_dynamic, arg_dynamic, indices, values):
    base = param_dynamic[position]
    flat = base.reshape(-1)

    def one(i, v):
        dynamic = list(param_dynamic)
        dynamic[position] = flat.at[i].set(v).reshape(base.shape)
        return problem.loss(dynamic, arg_dynamic)

    return jax.vmap(one)(indices, values)


def choose_batch_size(leaf_size: int, itemsize: int, n_points: int,
                      requested: Optional[int] = None) -> int:
    """Batch size from a memory budget, never more than needed for `n_points`."""
    if requested is not None:
        return requested
    by_memory = max(1, BATCH_MEMORY_BUDGET // max(1, 4 * leaf_size * itemsize))
    needed = 1 << max(0, int(np.ceil(np.log2(max(1, n_points)))))
    return int(min(MAX_BATCH, by_memory, needed))


def evaluate(problem: Problem, position: int, param_dynamic: Sequence[Any],
             arg_dynamic: Sequence[Any], indices: np.ndarray, values: np.ndarray,
             batch_size: int) -> np.ndarray:
    """Loss values (float64) with component `indices[k]` of leaf `position` set to `values[k]`."""
    m = len(indices)
    if m == 0:
        return np.zeros(0)
    leaf = param_dynamic[position]
    pad = (-m) % batch_size
    # Padding entries evaluate the unperturbed point; their results are dropped.
    indices = np.concatenate([indices, np.zeros(pad, indices.dtype)]).astype(np.int32)
    first = np.asarray(leaf).reshape(-1)[:1]
    values = np.concatenate([values, np.repeat(first, pad)]).astype(leaf.dtype)
    param_dynamic, arg_dynamic = tuple(param_dynamic), tuple(arg_dynamic)
    outs = [
        _evaluate_batch(problem, position, param_dynamic, arg_dynamic,
                        jnp.asarray(indices[s:s + batch_size]),
                        jnp.asarray(values[s:s + batch_size]))
        for s in range(0, m + pad, batch_size)
    ]  # dispatched asynchronously; gathered below
    return np.concatenate([np.asarray(o, dtype=np.float64).reshape(-1) for o in outs])[:m]
