"""Which leaves of a pytree are checked, and how to put the tree back together.

A pytree is split into three kinds of leaves:

- *checked*: real floating arrays (and Python floats); these are perturbed and compared;
- *carried*: other arrays (int/bool arrays, PRNG keys); passed through unchanged, traced;
- *static*: everything else (strings, Python ints, functions); passed through unchanged and
  part of the compilation key, so they must be hashable (unhashable ones are keyed by identity).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

CHECKED, CARRIED, STATIC = 0, 1, 2


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def is_prng_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def is_checkable(x: Any) -> bool:
    """Real floating arrays and Python floats: the leaves whose gradient is checked."""
    if isinstance(x, float):
        return True
    if not _is_array(x) or is_prng_key(x):
        return False
    return bool(jnp.issubdtype(x.dtype, jnp.floating))


def leaf_kind(x: Any, checked_ok: bool = True) -> int:
    if checked_ok and is_checkable(x):
        return CHECKED
    if _is_array(x):
        return CARRIED
    return STATIC


class _ByIdentity:
    """Makes an unhashable static leaf usable as a compilation key (compared by identity)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ByIdentity) and other.value is self.value


def _hashable(x: Any) -> Any:
    try:
        hash(x)
        return x
    except TypeError:
        return _ByIdentity(x)


def _unwrap(x: Any) -> Any:
    return x.value if isinstance(x, _ByIdentity) else x


@dataclasses.dataclass(frozen=True)
class Structure:
    """The hashable skeleton of a pytree: its treedef, each leaf's kind, its static leaves.

    Equal structures rebuild equal trees from equal dynamic leaves, which is what lets one
    compiled evaluator serve every call with the same shapes.
    """

    treedef: Any
    kinds: tuple[int, ...]
    static: tuple[Any, ...]

    @property
    def checked(self) -> tuple[int, ...]:
        """Positions of the checked leaves among the dynamic leaves (as `Split.checked`)."""
        dynamic = [k for k in self.kinds if k != STATIC]
        return tuple(i for i, k in enumerate(dynamic) if k == CHECKED)

    @property
    def checked_at(self) -> tuple[int, ...]:
        """Positions of the checked leaves among all of the treedef's leaves."""
        return tuple(i for i, k in enumerate(self.kinds) if k == CHECKED)

    def rebuild(self, dynamic: Sequence[Any]) -> Any:
        """The pytree with `dynamic` (checked and carried leaves, in order) put back."""
        dyn, stat = iter(dynamic), iter(self.static)
        leaves = [next(stat) if k == STATIC else next(dyn) for k in self.kinds]
        return jax.tree_util.tree_unflatten(self.treedef, [_unwrap(x) for x in leaves])


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """A pytree split into its structure and its dynamic (array) leaves."""

    structure: Structure
    dynamic: tuple[Any, ...]      # checked and carried leaves, in tree order
    checked: tuple[int, ...]      # positions in `dynamic` of the checked leaves
    paths: tuple[str, ...]        # jax.tree_util.keystr of each checked leaf

    @property
    def checked_values(self) -> list[Any]:
        return [self.dynamic[i] for i in self.checked]


def split(tree: Any, check_floats: bool = True) -> Split:
    """Split `tree`; with `check_floats=False` nothing is marked checked (used for args)."""
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    kinds, static, dynamic, checked, paths = [], [], [], [], []
    for path, leaf in with_paths:
        kind = leaf_kind(leaf, check_floats)
        kinds.append(kind)
        if kind == STATIC:
            static.append(_hashable(leaf))
            continue
        if kind == CHECKED:
            checked.append(len(dynamic))
            paths.append(jax.tree_util.keystr(path))
            leaf = jnp.asarray(leaf)
        dynamic.append(leaf)
    structure = Structure(treedef, tuple(kinds), tuple(static))
    return Split(structure, tuple(dynamic), tuple(checked), tuple(paths))


def replace_dynamic(s: Split, dynamic: Sequence[Any]) -> Split:
    return dataclasses.replace(s, dynamic=tuple(dynamic))
