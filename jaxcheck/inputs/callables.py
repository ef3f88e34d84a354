"""The user's callables as keys of compiled programs.

Every program jaxcheck compiles is keyed by the user's function (a `Problem` holds it), as
`jax.jit` keys its cache by the function it wraps. A callable whose hash fails (an instance of
a dataclass with `eq=True`, an object holding arrays) is keyed by its identity instead: a
second check of the same object reuses its programs, and any other object compiles its own.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound="Callable[..., Any] | None")


class ByIdentity:
    """`fn`, hashed and compared by its identity (kept alive by the caches that hold it, so
    its `id` is not reused while a key holds it)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __hash__(self) -> int:
        return id(self.fn)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ByIdentity) and other.fn is self.fn

    def __repr__(self) -> str:
        return repr(self.fn)


def keyed(fn: F) -> F:
    """`fn` itself where it hashes, else `fn` keyed by its identity (`ByIdentity`); None
    stays None."""
    if fn is None:
        return fn
    try:
        hash(fn)
    except TypeError:
        return ByIdentity(fn)  # type: ignore[return-value]
    return fn
