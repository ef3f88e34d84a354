"""The loss as jaxcheck evaluates it: `fn` over the dynamic leaves of params and args.

A `Problem` is hashable (fn and the static skeletons of its inputs), so it keys every compiled
program of a check: a second check of the same function with the same shapes compiles nothing.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from .placement import placed_by_xla
from .pytree import Structure


@dataclasses.dataclass(frozen=True)
class Problem:
    """`fn` with the hashable skeletons of its params and args: the compilation key."""

    fn: Callable[..., Any]
    params: Structure
    args: Structure

    def loss(self, param_dynamic: Sequence[Any], arg_dynamic: Sequence[Any]) -> Any:
        return self.fn(self.params.rebuild(param_dynamic),
                       *self.args.rebuild(placed_by_xla(arg_dynamic)))
