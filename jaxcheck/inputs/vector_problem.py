"""A function with vector- or tree-valued output, as the map from real views to one flat vector.

Inputs: the dynamic leaves of `primals` (complex leaves already replaced by real views, see
`complex_params`). Output: every floating leaf of `fn`'s output, complex leaves as real views,
raveled and concatenated into one real vector; integer and boolean outputs are not
differentiable and are left out. Both `OutputLayout` and `VectorProblem` are hashable, so they
key compiled programs the way `problem.Problem` does.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .complex_params import cotangent_from_real_view, to_real_view
from .pytree import CHECKED, Structure
from .validation import require_components


@dataclasses.dataclass(frozen=True)
class OutputLayout:
    """Where each floating output leaf sits in the flat real output vector."""

    treedef: Any
    compared: tuple[bool, ...]              # per output leaf: floating (compared) or not
    leaf_shapes: tuple[tuple[int, ...], ...]
    leaf_dtypes: tuple[str, ...]
    paths: tuple[str, ...]                  # per output leaf, `jax.tree_util.keystr`
    dtype: str                              # real dtype of the flat vector

    @property
    def complex(self) -> tuple[bool, ...]:
        return tuple(bool(jnp.issubdtype(np.dtype(t), jnp.complexfloating))
                     for t in self.leaf_dtypes)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Real-view size of each output leaf (0 for leaves that are not compared)."""
        return tuple(int(np.prod(s, dtype=np.int64)) * (2 if c else 1) if k else 0
                     for s, c, k in zip(self.leaf_shapes, self.complex, self.compared))

    @property
    def size(self) -> int:
        return sum(self.sizes)

    def flatten(self, out: Any) -> Any:
        """The flat real vector of `out` (traceable)."""
        leaves = self.treedef.flatten_up_to(out)
        parts = []
        for leaf, compared, is_complex in zip(leaves, self.compared, self.complex):
            if compared:
                leaf = to_real_view(leaf) if is_complex else jnp.asarray(leaf)
                parts.append(leaf.reshape(-1).astype(self.dtype))
        return jnp.concatenate(parts)

    def cotangent_tree(self, c: Any) -> Any:
        """The cotangent tree, in JAX's convention, whose pairing picks `c · flatten(out)`."""
        leaves, start = [], 0
        for shape, dtype, compared, is_complex, size in zip(
                self.leaf_shapes, self.leaf_dtypes, self.compared, self.complex, self.sizes):
            if not compared:
                leaves.append(np.zeros(shape, dtype))
                continue
            part = c[start:start + size]
            start += size
            if is_complex:
                leaves.append(cotangent_from_real_view(part.reshape(shape + (2,))))
            else:
                leaves.append(part.reshape(shape).astype(dtype))
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def output_layout(out_shapes: Any, who: str = "fn") -> OutputLayout:
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(out_shapes)
    compared, shapes, dtypes, paths, real = [], [], [], [], []
    for path, leaf in with_paths:
        if not hasattr(leaf, "dtype"):
            raise ValueError(f"{who}: expected outputs that are arrays (a pytree of them); got "
                             f"a leaf {leaf!r} at {jax.tree_util.keystr(path)}")
        inexact = bool(jnp.issubdtype(leaf.dtype, jnp.inexact))
        compared.append(inexact)
        shapes.append(tuple(leaf.shape))
        dtypes.append(str(leaf.dtype))
        paths.append(jax.tree_util.keystr(path))
        if inexact:
            real.append(jnp.finfo(leaf.dtype).dtype)
    if not real:
        raise ValueError(f"{who}: expected at least one floating output to differentiate; got "
                         f"{jax.tree_util.tree_structure(out_shapes)} with dtypes {dtypes}")
    require_components(who, [(path, shape) for path, shape, c in zip(paths, shapes, compared)
                             if c], kind="output ", purpose="differentiate")
    return OutputLayout(treedef, tuple(compared), tuple(shapes), tuple(dtypes), tuple(paths),
                        str(np.result_type(*real)))


@dataclasses.dataclass(frozen=True)
class VectorProblem:
    """`fn(primals, *args)` as a map from the primals' dynamic leaves to a flat real vector."""

    fn: Callable[..., Any]
    params: Structure
    args: Structure
    checked: tuple[int, ...]       # positions of the checked leaves among the dynamic leaves
    output: OutputLayout | None = None

    @property
    def layout(self) -> OutputLayout:
        """`output`, which `with_layout` sets before any evaluation."""
        assert self.output is not None, "with_layout sets the output layout first"
        return self.output

    def call(self, param_dynamic: Sequence[Any], arg_dynamic: Sequence[Any]) -> Any:
        return self.fn(self.params.rebuild(param_dynamic), *self.args.rebuild(arg_dynamic))

    def outputs(self, param_dynamic: Sequence[Any], arg_dynamic: Sequence[Any]) -> Any:
        return self.layout.flatten(self.call(param_dynamic, arg_dynamic))

    @property
    def checked_leaves(self) -> tuple[int, ...]:
        """Positions of the checked leaves among all leaves of the primals' tree."""
        return tuple(k for k, kind in enumerate(self.params.kinds) if kind == CHECKED)

    def checked_of(self, tree: Any, who: str, shapes: Sequence[tuple[int, ...]]) -> list[Any]:
        """The leaves of a tree like primals at the checked positions, shapes validated."""
        try:
            parts = self.params.treedef.flatten_up_to(tree)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{who} must return a pytree with the structure of primals "
                             f"({self.params.treedef}); got "
                             f"{jax.tree_util.tree_structure(tree)}") from e
        out = []
        for k, shape in zip(self.checked_leaves, shapes):
            value = parts[k]
            if value is None or tuple(np.shape(value)) != tuple(shape):
                got = None if value is None else tuple(np.shape(value))
                raise ValueError(f"{who} returned shape {got} for a checked leaf; expected "
                                 f"{tuple(shape)} (the shape of that leaf of primals)")
            out.append(value)
        return out


def with_layout(problem: VectorProblem, param_dynamic, arg_dynamic, who: str) -> VectorProblem:
    shapes = jax.eval_shape(problem.call, tuple(param_dynamic), tuple(arg_dynamic))
    return dataclasses.replace(problem, output=output_layout(shapes, who))
