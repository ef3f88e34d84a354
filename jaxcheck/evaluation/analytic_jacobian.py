"""The Jacobian under test, by reverse mode (rows) or forward mode (columns).

Sources: `"rev"` (rows by `jax.vjp`, what `jax.jacrev` computes), `"fwd"` (columns by
`jax.jvp`, what `jax.jacfwd` computes), a user's `vjp_fn` (rows), `jvp_fn` (columns) or
`jac_fn` (the whole Jacobian in `jax.jacrev`'s layout). Rows and columns are computed by
`vmap` over fixed-size batches of basis vectors, each built from its index inside the mapped
function, in one compiled program per (problem, source, leaf, batch size).

Forward mode through a `jax.custom_vjp` function is impossible (JAX has no JVP rule for it);
that is reported as `ForwardModeUnavailable`, so the caller can skip it with a note.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import ForwardModeUnavailable
from ..inputs.pytree import is_prng_key
from ..inputs.vector_problem import VectorProblem
from .engine import Kernel, batch_size, run

REVERSE = ("rev", "vjp_fn")
FORWARD = ("fwd", "jvp_fn")


@dataclasses.dataclass(frozen=True)
class Source:
    """One analytic side: `name` is "rev", "fwd", "vjp_fn", "jvp_fn" or "jac_fn"."""

    name: str
    user: Callable[..., Any] | None = None


def _put(dynamic: Sequence[Any], positions: Sequence[int], values: Sequence[Any]) -> list:
    dynamic = list(dynamic)
    for position, value in zip(positions, values):
        dynamic[position] = value
    return dynamic


def _row(problem: VectorProblem, vjp_fn, param_dynamic, arg_dynamic, i) -> list:
    """Row i of the Jacobian w.r.t. each checked leaf, flattened (one VJP)."""
    c = jax.nn.one_hot(i, problem.layout.size, dtype=problem.layout.dtype)
    checked = [param_dynamic[k] for k in problem.checked]
    if vjp_fn is None:
        def f(values):
            return problem.outputs(_put(param_dynamic, problem.checked, values), arg_dynamic)
        (g,) = jax.vjp(f, checked)[1](c)
    else:
        u = vjp_fn(problem.params.rebuild(param_dynamic), problem.layout.cotangent_tree(c),
                   *problem.args.rebuild(arg_dynamic))
        g = problem.checked_of(u, "vjp_fn", [x.shape for x in checked])
    return [jnp.asarray(x).reshape(-1) for x in g]


def _column(problem: VectorProblem, jvp_fn, position, param_dynamic, arg_dynamic, j):
    """Column j (of checked leaf at `position`) of the Jacobian (one JVP)."""
    base = param_dynamic[position]
    t = jax.nn.one_hot(j, base.size, dtype=base.dtype).reshape(base.shape)
    if jvp_fn is None:
        def f(x):
            return problem.outputs(_put(param_dynamic, (position,), (x,)), arg_dynamic)
        return jax.jvp(f, (base,), (t,))[1]
    tangents = [x if is_prng_key(x) else jnp.zeros_like(x) for x in param_dynamic]
    tangents[position] = t
    out = jvp_fn(problem.params.rebuild(param_dynamic), problem.params.rebuild(tangents),
                 *problem.args.rebuild(arg_dynamic))
    try:
        return problem.layout.flatten(out)
    except (ValueError, TypeError) as e:
        raise ValueError(f"jvp_fn must return output tangents with the structure of fn's "
                         f"output ({problem.layout.treedef}); got "
                         f"{jax.tree_util.tree_structure(out)}") from e


@dataclasses.dataclass(frozen=True)
class JacobianRows(Kernel):
    """Row `i` of the Jacobian w.r.t. each checked leaf (one VJP): a point is `i`."""

    problem: VectorProblem
    vjp_fn: Callable[..., Any] | None

    def point_specs(self, shared):
        return (jax.ShapeDtypeStruct((), np.int32),)

    def copied_bytes(self, shared):
        checked = [shared[0][k] for k in self.problem.checked]
        itemsize = max(np.dtype(x.dtype).itemsize for x in checked)
        return (sum(int(x.size) for x in checked) + self.problem.layout.size) * itemsize

    def variants(self, shared):
        return [lambda sh, i: _row(self.problem, self.vjp_fn, sh[0], sh[1], i)]


@dataclasses.dataclass(frozen=True)
class JacobianColumns(Kernel):
    """Column `j` (of the checked leaf at `position`) of the Jacobian (one JVP)."""

    problem: VectorProblem
    jvp_fn: Callable[..., Any] | None
    position: int

    def point_specs(self, shared):
        return (jax.ShapeDtypeStruct((), np.int32),)

    def copied_bytes(self, shared):
        # the itemsize of the widest checked leaf, as for the rows
        itemsize = max(np.dtype(shared[0][k].dtype).itemsize for k in self.problem.checked)
        size = int(shared[0][self.position].size)
        return (size + self.problem.layout.size) * itemsize

    def variants(self, shared):
        return [lambda sh, j: _column(self.problem, self.jvp_fn, self.position, sh[0], sh[1], j)]


def _traced_or_eager(kernel: Kernel, shared: Any, count: int, requested: int | None,
                     eager: Callable[[int], Any]) -> list[np.ndarray]:
    """The engine's batches of indices 0..count-1; a user function that cannot be traced
    (Python control flow on values) runs one index at a time, op by op."""
    indices = np.arange(count, dtype=np.int32)
    try:
        out = run(kernel, shared, (indices,), batch_size(kernel, shared, count, requested))
    except jax.errors.JAXTypeError:
        per = [eager(int(i)) for i in indices]
        per = [p if isinstance(p, (list, tuple)) else [p] for p in per]
        out = [np.stack([np.asarray(p[k], np.float64) for p in per]) for k in range(len(per[0]))]
    return list(out) if isinstance(out, (list, tuple)) else [out]


def analytic_jacobian(source: Source, problem: VectorProblem, param_dynamic: Sequence[Any],
                      arg_dynamic: Sequence[Any],
                      requested: int | None = None) -> list[np.ndarray]:
    """The Jacobian w.r.t. each checked leaf, as float64 arrays (output size, leaf size)."""
    pd, ad = tuple(param_dynamic), tuple(arg_dynamic)
    n_out = problem.layout.size
    sizes = [int(pd[k].size) for k in problem.checked]
    if source.name in REVERSE:
        rows = _traced_or_eager(JacobianRows(problem, source.user), (pd, ad), n_out, requested,
                                lambda i: _row(problem, source.user, pd, ad, i))
        return [r.reshape(n_out, -1) for r in rows]
    if source.name in FORWARD:
        out = []
        for position, size in zip(problem.checked, sizes):
            if size == 0:   # a 0-size leaf has no column
                out.append(np.zeros((n_out, 0)))
                continue
            try:
                (columns,) = _traced_or_eager(
                    JacobianColumns(problem, source.user, position), (pd, ad), size, requested,
                    lambda j, p=position: _column(problem, source.user, p, pd, ad, j))
            except TypeError as e:
                if "custom_vjp" in str(e):
                    raise ForwardModeUnavailable(str(e)) from e
                raise
            out.append(columns.reshape(size, n_out).T)
        return out
    return _full_jacobian(source.user, problem, pd, ad)


def _call(jac_fn, problem: VectorProblem, pd, ad):
    return jac_fn(problem.params.rebuild(pd), *problem.args.rebuild(ad))


_call_jit = jax.jit(_call, static_argnums=(0, 1))


def _full_jacobian(jac_fn, problem: VectorProblem, pd, ad) -> list[np.ndarray]:
    try:  # one compiled program instead of one per operation
        tree = _call_jit(jac_fn, problem, pd, ad)
    except jax.errors.JAXTypeError:  # not traceable (Python control flow on values)
        tree = _call(jac_fn, problem, pd, ad)
    layout = problem.layout
    try:
        parts = layout.treedef.flatten_up_to(tree)
    except (ValueError, TypeError) as e:
        raise ValueError(f"jac_fn must return a pytree like jax.jacrev(fn)'s: the structure of "
                         f"fn's output ({layout.treedef}) with a tree like primals at each "
                         f"leaf; got {jax.tree_util.tree_structure(tree)}") from e
    in_shapes = [tuple(pd[k].shape) for k in problem.checked]
    blocks: list[list[np.ndarray]] = [[] for _ in in_shapes]
    for part, shape, compared in zip(parts, layout.leaf_shapes, layout.compared):
        if not compared:
            continue
        leaves = problem.checked_of(part, "jac_fn", [shape + s for s in in_shapes])
        for k, leaf in enumerate(leaves):
            blocks[k].append(np.asarray(leaf, np.float64).reshape(int(np.prod(shape)), -1))
    return [np.concatenate(b, axis=0) for b in blocks]
