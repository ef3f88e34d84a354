"""The function under test, as every rule check sees it.

`fn(primals, *args)` returns any pytree. Its differentiated inputs are the floating leaves of
`primals` (`xs`, a list); integer leaves are carried as they are, and `args` are constants.
Its differentiated outputs are its floating output leaves (`outputs(xs)`, a list). JAX's JVP
and VJP of that map, and the user's `jvp_fn(primals, tangents, *args)` /
`vjp_fn(primals, cotangents, *args)` when given, are all expressed over these lists, so every
check compares lists of arrays leaf by leaf.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _jaxpr
from ..inputs.pytree import CHECKED, Split, Structure, split
from ..inputs.validation import require_components
from . import magnitudes

Leaves = list[Any]


def is_floating(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def float0_like(x: Any) -> np.ndarray:
    """The tangent/cotangent JAX expects for an integer or bool leaf."""
    return np.zeros(np.shape(x), dtype=jax.dtypes.float0)


@dataclasses.dataclass(frozen=True, eq=False)
class Subject:
    """`fn` over the floating leaves of `primals`, with its output's structure."""

    fn: Callable[..., Any]
    primals: Split                  # checked: the floating leaves; carried: ints, keys
    args: tuple[Any, ...]
    out_paths: tuple[str, ...]      # keystr of every output leaf
    out_floating: tuple[int, ...]   # positions of the floating output leaves
    out_treedef: Any
    out_example: tuple[Any, ...]    # every output leaf, at the primals
    jvp_fn: Callable[..., Any] | None = None
    vjp_fn: Callable[..., Any] | None = None

    # ------------------------------------------------------------------ the primals

    @property
    def xs(self) -> Leaves:
        return list(self.primals.checked_values)

    @property
    def in_paths(self) -> tuple[str, ...]:
        return self.primals.paths

    @property
    def floating_out_paths(self) -> tuple[str, ...]:
        return tuple(self.out_paths[k] for k in self.out_floating)

    def tree(self, xs: Sequence[Any]) -> Any:
        """`primals` with its floating leaves replaced by `xs`."""
        dynamic = list(self.primals.dynamic)
        for position, x in zip(self.primals.checked, xs):
            dynamic[position] = x
        return self.primals.structure.rebuild(dynamic)

    def input_tangents(self, ts: Sequence[Any]) -> Any:
        """A tangent (or cotangent) tree like `primals`: `ts` in the floating leaves,
        float0 zeros in the others."""
        dynamic = [float0_like(x) for x in self.primals.dynamic]
        for position, t in zip(self.primals.checked, ts):
            dynamic[position] = t
        return self.primals.structure.rebuild(dynamic)

    def floating_of_input_tree(self, tree: Any) -> Leaves:
        """The entries of a tree like `primals` at its floating leaves."""
        leaves = self.primals.structure.treedef.flatten_up_to(tree)
        return [leaf for leaf, kind in zip(leaves, self.primals.structure.kinds)
                if kind == CHECKED]

    # ------------------------------------------------------------------ the function

    def outputs(self, xs: Sequence[Any]) -> Leaves:
        """The floating output leaves of `fn` at the primals with floating leaves `xs`."""
        leaves = jax.tree_util.tree_leaves(self.fn(self.tree(xs), *self.args))
        return [leaves[k] for k in self.out_floating]

    def output_cotangents(self, cs: Sequence[Any]) -> Any:
        """A cotangent tree like the output: `cs` in the floating leaves, float0 zeros in the
        others (integer outputs)."""
        leaves = [float0_like(x) for x in self.out_example]
        for k, c in zip(self.out_floating, cs):
            leaves[k] = c
        return jax.tree_util.tree_unflatten(self.out_treedef, leaves)

    def floating_of_output_tree(self, tree: Any) -> Leaves:
        leaves = jax.tree_util.tree_leaves(tree)
        return [leaves[k] for k in self.out_floating]

    # ------------------------------------------------------------------ JAX's derivatives

    def jvp(self, xs: Sequence[Any], ts: Sequence[Any]) -> Leaves:
        """JAX's JVP: the output tangents of the floating outputs."""
        return list(jax.jvp(self.outputs, (list(xs),), (list(ts),))[1])

    def vjp(self, xs: Sequence[Any], cs: Sequence[Any]) -> Leaves:
        """JAX's VJP: the cotangents of the floating inputs."""
        _, pullback = jax.vjp(self.outputs, list(xs))
        return list(pullback(list(cs))[0])

    @functools.cached_property
    def compiled(self) -> dict[str, Callable[..., Leaves]]:
        """`jax.jit` of `outputs`, `jvp`, `vjp`, `user_jvp`, `user_vjp` by name ("fn",
        "jax.jvp", "jax.vjp", "jvp_fn", "vjp_fn"): checks that are not about compilation
        evaluate through these (one compiled program each, shared by the checks, instead of
        every primitive dispatched on its own)."""
        return {"fn": jax.jit(self.outputs), "jax.jvp": jax.jit(self.jvp),
                "jax.vjp": jax.jit(self.vjp), "jvp_fn": jax.jit(self.user_jvp),
                "vjp_fn": jax.jit(self.user_vjp)}

    @functools.cached_property
    def _compiled_terms(self) -> dict[str, Callable[..., Leaves]]:
        def program(f: Callable[..., Leaves]) -> Callable[..., Leaves]:
            return jax.jit(lambda xs, v: magnitudes.term_magnitudes(lambda w: f(xs, w), v))
        return {"jax.jvp": program(self.jvp), "jax.vjp": program(self.vjp),
                "jvp_fn": program(self.user_jvp), "vjp_fn": program(self.user_vjp)}

    def terms(self, name: str, xs: Sequence[Any], v: Sequence[Any]) -> list[np.ndarray] | None:
        """The magnitudes of the terms the derivative `name` ("jax.jvp", "jax.vjp", "jvp_fn",
        "vjp_fn") sums at (`xs`, `v`), per output leaf (`magnitudes.term_magnitudes`,
        compiled once per derivative); None where they cannot be traced."""
        try:
            return [np.asarray(m, np.float64)
                    for m in self._compiled_terms[name](list(xs), list(v))]
        except Exception:
            return None

    # ------------------------------------------------------------------ the user's

    def user_jvp(self, xs: Sequence[Any], ts: Sequence[Any]) -> Leaves:
        assert self.jvp_fn is not None
        out = self.jvp_fn(self.tree(xs), self.input_tangents(ts), *self.args)
        return self.floating_of_output_tree(out)

    def user_vjp(self, xs: Sequence[Any], cs: Sequence[Any]) -> Leaves:
        assert self.vjp_fn is not None
        out = self.vjp_fn(self.tree(xs), self.output_cotangents(cs), *self.args)
        return self.floating_of_input_tree(out)

    def jvps(self) -> list[tuple[str, Callable[..., Leaves]]]:
        """The JVPs to check: JAX's (when it has one) and the user's `jvp_fn`."""
        out = [("jax.jvp", self.jvp)] if self.has_jvp else []
        return out + ([("jvp_fn", self.user_jvp)] if self.jvp_fn is not None else [])

    def vjps(self) -> list[tuple[str, Callable[..., Leaves]]]:
        return [("jax.vjp", self.vjp)] + (
            [("vjp_fn", self.user_vjp)] if self.vjp_fn is not None else [])

    # ------------------------------------------------------------------ what fn contains

    @functools.cached_property
    def custom_rules(self) -> frozenset[str]:
        """Which custom rules `fn` calls: a subset of {"custom_jvp", "custom_vjp"}."""
        closed = jax.make_jaxpr(self.outputs)(self.xs)
        return frozenset(_jaxpr.custom_rule_kinds(closed.jaxpr))

    @functools.cached_property
    def has_jvp(self) -> bool:
        """Whether JAX can differentiate `fn` in forward mode (a `jax.custom_vjp` cannot)."""
        return "custom_vjp" not in self.custom_rules

    # ------------------------------------------------------------------ random vectors

    def random_like(self, leaves: Sequence[Any], rng: np.random.Generator) -> Leaves:
        """Standard normal arrays shaped and typed like `leaves`."""
        return [jnp.asarray(rng.standard_normal(np.shape(x)).astype(jnp.result_type(x)))
                for x in leaves]

    def zeros_like(self, leaves: Sequence[Any]) -> Leaves:
        return [jnp.zeros(np.shape(x), jnp.result_type(x)) for x in leaves]

    def tangent_leaves(self) -> Leaves:
        return self.xs

    def cotangent_leaves(self) -> Leaves:
        return [self.out_example[k] for k in self.out_floating]


# The Subject method of each derivative's name, as `Subject.jvps()`/`vjps()` name them.
METHODS = {"fn": "outputs", "jax.jvp": "jvp", "jax.vjp": "vjp", "jvp_fn": "user_jvp",
           "vjp_fn": "user_vjp"}


@dataclasses.dataclass(frozen=True)
class Skeleton:
    """A `Subject` without its arrays: hashable, so it keys a compiled program (the engine's
    cache holds its keys; a key holding the user's arrays would keep them alive)."""

    fn: Callable[..., Any]
    primals: Structure
    checked: tuple[int, ...]
    paths: tuple[str, ...]
    args: Structure
    out_paths: tuple[str, ...]
    out_floating: tuple[int, ...]
    out_treedef: Any
    out_shapes: tuple[Any, ...]     # jax.ShapeDtypeStruct of every output leaf
    jvp_fn: Callable[..., Any] | None
    vjp_fn: Callable[..., Any] | None

    def subject(self, primal_dynamic: Sequence[Any], arg_dynamic: Sequence[Any]) -> Subject:
        """The `Subject` with these dynamic leaves (arrays or tracers)."""
        primals = Split(self.primals, tuple(primal_dynamic), self.checked, self.paths)
        return Subject(self.fn, primals, tuple(self.args.rebuild(arg_dynamic)),
                       self.out_paths, self.out_floating, self.out_treedef, self.out_shapes,
                       self.jvp_fn, self.vjp_fn)


def skeleton(s: Subject) -> tuple[Skeleton, tuple[Any, ...], tuple[Any, ...]]:
    """`s` as (its `Skeleton`, its primals' dynamic leaves, its args' dynamic leaves)."""
    a = split(s.args, check_floats=False)
    shapes = tuple(jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x))
                   for x in s.out_example)
    return (Skeleton(s.fn, s.primals.structure, s.primals.checked, s.primals.paths,
                     a.structure, s.out_paths, s.out_floating, s.out_treedef, shapes,
                     s.jvp_fn, s.vjp_fn), s.primals.dynamic, a.dynamic)


def make_subject(fn: Callable[..., Any], primals: Split, args: tuple[Any, ...],
                 jvp_fn: Callable[..., Any] | None,
                 vjp_fn: Callable[..., Any] | None) -> Subject:
    """The `Subject` of `fn` at `primals` (already split), evaluating `fn` once."""
    out = fn(primals.structure.rebuild(primals.dynamic), *args)
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(out)
    paths = tuple(jax.tree_util.keystr(p) for p, _ in with_paths)
    leaves = tuple(leaf for _, leaf in with_paths)
    floating = tuple(k for k, leaf in enumerate(leaves) if is_floating(leaf))
    if any(jnp.issubdtype(jnp.result_type(x), jnp.complexfloating) for x in leaves):
        raise ValueError("fn: check_rules supports real floating outputs only; got a complex "
                         "output leaf (return its real and imaginary parts as two leaves)")
    if not floating:
        raise ValueError("fn: expected at least one floating-point output leaf to "
                         f"differentiate; got outputs {jax.tree_util.tree_structure(out)}")
    require_components("fn", [(paths[k], np.shape(leaves[k])) for k in floating],
                       kind="output ", purpose="differentiate")
    if any(jnp.issubdtype(jnp.result_type(x), jnp.complexfloating)
           for x in (*primals.dynamic, *leaves)):
        raise ValueError("primals: check_rules supports real floating leaves only; got a "
                         "complex leaf (pass its real and imaginary parts as two leaves)")
    return Subject(fn, primals, args, paths, floating, treedef, leaves, jvp_fn, vjp_fn)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every check needs besides the subject: the random draws and the tolerance."""

    seed: int = 0
    safety: float = 3.0
    pairs: int = 3          # random (tangent, cotangent) pairs of the transpose identity
    batch: int = 3          # batch size of the batching check
    localise_max: int = 64  # a failing (output, input) leaf pair this small gets entries

    def rng(self, check: str) -> np.random.Generator:
        """An independent stream per check, reproducible by `seed`."""
        return np.random.default_rng([self.seed, sum(map(ord, check))])
