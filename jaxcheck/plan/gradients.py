"""The analytic side: the gradient under test, as float64-comparable arrays per checked leaf."""
from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _compiler
from ..inputs.placement import (
    flatten,
    is_distributed,
    programs_over,
    sharded_in_types,
    to_host,
)
from ..inputs.problem import Problem
from ..inputs.pytree import Split
from ..inputs.validation import require_finite_gradient, user_call


@_compiler.runs_once
def _gradient(problem: Problem, checked: tuple[int, ...], shardings: tuple[Any, ...],
              param_dynamic, arg_dynamic):
    def loss_of_checked(values):
        dynamic = list(param_dynamic)
        for position, value in zip(checked, values):
            dynamic[position] = value
        return problem.loss(dynamic, arg_dynamic)

    grads = jax.grad(loss_of_checked)([param_dynamic[i] for i in checked])
    # a sharded leaf's gradient sharded like the leaf (else XLA may replicate it: one copy
    # per device)
    return [g if s is None else jax.lax.with_sharding_constraint(g, s)
            for g, s in zip(grads, shardings)]


_autodiff_gradient = _compiler.jit(_gradient, static_argnums=(0, 1, 2))


def _fails_only_under_jit(error: Exception) -> bool:
    """JAX's linearization of some ops needs concrete operands that tracing hides, e.g.
    `lax.reduce_window` with an array init value: `jax.grad` works, `jax.jit(jax.grad)` not."""
    return isinstance(error, ValueError) and "Linearization failed" in str(error)


@dataclasses.dataclass(frozen=True, eq=False)
class AnalyticGradient:
    """The gradient under test: `grad_fn`'s, or `jax.grad(fn)`'s when `grad_fn` is None."""

    problem: Problem
    params: Split
    arg_dynamic: tuple[Any, ...]
    grad_fn: Callable[..., Any] | None = None
    # set when jax.grad(fn) works only op by op (see `_fails_only_under_jit`)
    _eager: list[bool] = dataclasses.field(default_factory=list, repr=False)
    # `leaves()` at params, once computed (a check asks for it where it starts its leaves'
    # programs, so that the gradient's compiles beside them, and again where it uses it)
    _at_params: list[list[np.ndarray]] = dataclasses.field(default_factory=list, repr=False)
    # held while the gradient at params is computed: a caller that asks for it meanwhile (the
    # check, while a background thread computes it) waits instead of computing it again
    _computing: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def leaves(self, param_dynamic: Sequence[Any] | None = None) -> list[np.ndarray]:
        """The gradient of each checked leaf (float64, on the host), at `param_dynamic`
        (default: params, computed once)."""
        if param_dynamic is not None:
            return [to_host(g).astype(np.float64) for g in self.device_leaves(param_dynamic)]
        with self._computing:
            if not self._at_params:
                self._at_params.append(
                    [to_host(g).astype(np.float64) for g in self.device_leaves()])
            return self._at_params[0]

    def device_leaves(self, param_dynamic: Sequence[Any] | None = None) -> list[Any]:
        """The gradient of each checked leaf where it was computed (a sharded leaf's gradient
        stays sharded: fast mode reads only what it names), in the dtype it came in."""
        dynamic = self.params.dynamic if param_dynamic is None else tuple(param_dynamic)
        where = "at params" if param_dynamic is None else "beside a kink"
        with programs_over(list(dynamic)):
            out, who, _ = self._evaluated(dynamic, where)
        if param_dynamic is None:
            require_finite_gradient(out, self.params.paths, who, lambda: _call(
                self.problem, self.params.dynamic, self.arg_dynamic))
        return out

    def device_leaf(self, leaf: int) -> Any:
        """`device_leaves()[leaf]` alone, flat (`placement.flatten`): its program computes
        no other leaf's gradient, so that a model near the size of its devices holds one
        leaf's gradient at a time instead of all of them; flattened in place where the
        gradient is an array of jaxcheck's own programs (not one a grad_fn run op by op may
        share with its caller)."""
        dynamic = self.params.dynamic
        with programs_over(list(dynamic)):
            out, who, owned = self._evaluated(dynamic, "at params", leaf)
        require_finite_gradient(out, [self.params.paths[leaf]], who, lambda: _call(
            self.problem, self.params.dynamic, self.arg_dynamic))
        return flatten(out.pop(), donate=owned)

    def _evaluated(self, dynamic: tuple[Any, ...], where: str,
                   leaf: int | None = None) -> tuple[list[Any], str, bool]:
        """The gradient at `dynamic` (of checked leaf `leaf` alone where given), who
        computed it (for the errors), and whether its arrays are jaxcheck's own (a grad_fn
        run op by op may return arrays its caller holds too)."""
        if self.grad_fn is None:
            with user_call("fn", f"under jax.grad {where}"):
                out = list(self._autodiff(dynamic, leaf))
            return out, "jax.grad(fn)", True
        user = Problem(self.grad_fn, self.problem.params, self.problem.args)
        with user_call("grad_fn", where):
            # one leaf's entry alone: XLA then computes nothing only the others need
            only = None if leaf is None else (self.params.structure.treedef,
                                              self.params.structure.checked_at[leaf])
            op_by_op = False
            try:  # one compiled program instead of one per operation
                tree = _call(user, dynamic, self.arg_dynamic, self._placed(), only)
            except (jax.errors.JAXTypeError, ValueError) as e:
                # not traceable (Python control flow on values), or see
                # `_fails_only_under_jit`: op by op
                if isinstance(e, ValueError) and not _fails_only_under_jit(e):
                    raise
                tree = user.loss(dynamic, self.arg_dynamic)
                op_by_op = True
        # a sharded leaf's gradient where the leaf lives (`_placed` computed it there:
        # then nothing moves, not even into an equal copy; else it moves device to device)
        shardings = self._shardings()
        values = extract_checked(tree, self.params, "grad_fn", leaf)
        del tree
        out = [g if s is None or _placed_as(g, s) else jax.device_put(g, s) for g, s in zip(
            values, shardings if leaf is None else [shardings[leaf]])]
        return out, "grad_fn", not op_by_op

    def _autodiff(self, dynamic: tuple[Any, ...], leaf: int | None = None) -> Any:
        """`jax.grad(fn)` (of checked leaf `leaf` alone where given), compiled, or op by op
        where only the compiled one fails."""
        checked, shardings = self.params.checked, self._shardings()
        if leaf is not None:
            checked, shardings = (checked[leaf],), (shardings[leaf],)
        if not self._eager:
            try:
                return _autodiff_gradient(self.problem, checked, shardings, dynamic,
                                          self.arg_dynamic)
            except ValueError as e:
                if not _fails_only_under_jit(e):
                    raise
                self._eager.append(True)   # remembered for the gradients beside kinks
        return _gradient(self.problem, checked, shardings, dynamic, self.arg_dynamic)

    def _placed(self) -> tuple | None:
        """For `_call`: params' tree structure and, per leaf of it, (sharding, shape) where
        the leaf is checked and sharded over a mesh of `Auto` axes, else None; None where no
        leaf is."""
        shardings = self._shardings()
        if all(s is None for s in shardings):
            return None
        structure = self.params.structure
        per_leaf: list[tuple | None] = [None] * len(structure.kinds)
        for k, s, value in zip(structure.checked_at, shardings, self.params.checked_values):
            if s is not None:
                per_leaf[k] = (s, tuple(value.shape))
        return structure.treedef, tuple(per_leaf)

    def _shardings(self) -> tuple[Any, ...]:
        """Per checked leaf, its sharding where it is sharded over a mesh of `Auto` axes, else
        None (over `Explicit` axes the sharding is part of the gradient's type already)."""
        return tuple(x.sharding if is_distributed(x) and not sharded_in_types(x) else None
                     for x in self.params.checked_values)

    def components_at(self, leaf: int, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Component `indices[k]` of checked leaf `leaf`'s gradient, with that component of
        the parameter set to `values[k]` (one gradient evaluation per entry)."""
        position = self.params.checked[leaf]
        base = self.params.dynamic[position]
        flat = to_host(base).reshape(-1)
        out = np.empty(len(indices))
        for k, (i, value) in enumerate(zip(indices, values)):
            moved = flat.copy()
            moved[i] = value
            dynamic = list(self.params.dynamic)
            dynamic[position] = jnp.asarray(moved.reshape(base.shape))
            out[k] = self.leaves(dynamic)[leaf].reshape(-1)[i]
        return out


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _call(problem: Problem, param_dynamic, arg_dynamic, placed: tuple | None = None,
          only: tuple | None = None):
    # Strings and objects that a grad_fn echoes back from params cannot leave a jit; they
    # become None, which `extract_checked` accepts for leaves that are not checked.
    tree = jax.tree_util.tree_map(lambda x: x if _is_jax_type(x) else None,
                                  problem.loss(param_dynamic, arg_dynamic))
    if only is not None:   # (params' treedef, position): that leaf kept, the others None
        treedef, position = only
        try:
            parts = treedef.flatten_up_to(tree)
        except (ValueError, TypeError):   # left for `extract_checked` to report
            return tree
        tree = treedef.unflatten([x if k == position else None for k, x in enumerate(parts)])
    if placed is None:
        return tree
    # A grad_fn's gradient of a sharded leaf, sharded like the leaf where it is computed:
    # moved there afterwards, it would be held twice (the program's output and the copy).
    # A tree not shaped like params is left for `extract_checked` to report.
    treedef, shardings = placed
    try:
        parts = treedef.flatten_up_to(tree)
    except (ValueError, TypeError):
        return tree
    return treedef.unflatten([
        jax.lax.with_sharding_constraint(x, s[0]) if s is not None
        and tuple(getattr(x, "shape", ())) == s[1] else x for x, s in zip(parts, shardings)])


def _placed_as(x: Any, sharding: Any) -> bool:
    """Whether array `x` is laid out over the devices as `sharding` says."""
    return isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim)


def _is_jax_type(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic, bool, int, float, complex))


def extract_checked(tree: Any, params: Split, who: str, leaf: int | None = None) -> list[Any]:
    """The leaves of `tree` at the checked positions of `params` (checked leaf `leaf` alone
    where given), validated against them."""
    structure = params.structure
    try:
        parts = structure.treedef.flatten_up_to(tree)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{who} must return a pytree with the structure of params "
            f"({structure.treedef}); got {jax.tree_util.tree_structure(tree)}"
        ) from e
    chosen = list(zip(params.paths, structure.checked_at, params.checked))
    out = []
    for path, position, dynamic_position in (chosen if leaf is None else [chosen[leaf]]):
        value, expected = parts[position], params.dynamic[dynamic_position]
        if value is None or not hasattr(value, "shape"):
            raise ValueError(f"{who} returned {value!r} for leaf {path}; expected an array "
                             f"of shape {tuple(expected.shape)}")
        if tuple(value.shape) != tuple(expected.shape):
            raise ValueError(f"{who} returned shape {tuple(value.shape)} for leaf {path}; "
                             f"expected {tuple(expected.shape)} (the shape of params{path})")
        if not jnp.issubdtype(value.dtype, jnp.floating):
            raise ValueError(f"{who} returned dtype {value.dtype} for floating leaf {path}; "
                             f"expected a real floating array")
        out.append(value)
    return out
