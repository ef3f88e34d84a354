"""What a check learns from tracing `fn`, kept per problem and input types.

A check traces `fn` to validate it (a scalar loss, its own errors surfacing clearly) and
twice more to see that it is deterministic (`plan.determinism`). Those traces cost as much as
evaluating a small model's every entry; a repeated check of the same function with the same
shapes (a check every N training steps) would pay them again for nothing, since it reuses the
programs compiled from the first call's trace (`evaluation.engine`, keyed the same way, as
`jax.jit` keys its own cache by the function's identity).

`shapes_key` is that key: the `Problem` (fn and the static skeletons of params and args), the
x64 setting and the types of the dynamic inputs. `Memo` is a small LRU map under a lock, the
one the engine also keeps its choices made from the loss's trace in (each leaf's path, the
programs leaves share, how a table is read); `clear` empties every memo (`engine.clear_cache`
calls it).
"""
from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

import jax

from .problem import Problem

SIZE = 64   # entries per memo, as the engine keeps its compiled programs
_T = TypeVar("_T")
_memos: list[Memo[Any]] = []
_lock = threading.Lock()


def shapes_key(problem: Problem, param_dynamic: Sequence[Any], arg_dynamic: Sequence[Any],
               *extra: Any) -> tuple:
    """What a decision made from the loss's trace depends on: the problem, the x64 setting
    and the types (shapes, dtypes, shardings in types) of its inputs."""
    x64 = bool(jax.config.jax_enable_x64)  # pyright: ignore[reportAttributeAccessIssue]
    return (problem, *extra, x64, _types(param_dynamic, arg_dynamic))


# The types of the last few input tuples, by identity: a check asks for its inputs' key at
# every choice (dozens of times), and the tuples of its leaf tasks are the same objects. Kept
# with the tuples themselves (alive, their ids stay theirs); lists (mutable) are not kept.
_recent_types: collections.OrderedDict[tuple[int, int], tuple[Any, Any, tuple]] = \
    collections.OrderedDict()


def _types(param_dynamic: Sequence[Any], arg_dynamic: Sequence[Any]) -> tuple:
    ids = (id(param_dynamic), id(arg_dynamic))
    kept = isinstance(param_dynamic, tuple) and isinstance(arg_dynamic, tuple)
    if kept:
        with _lock:
            found = _recent_types.get(ids)
        if found is not None:
            return found[2]
    types = tuple(jax.typeof(x) for x in jax.tree_util.tree_leaves((param_dynamic, arg_dynamic)))
    if kept:
        with _lock:
            _recent_types[ids] = (param_dynamic, arg_dynamic, types)
            while len(_recent_types) > 8:
                _recent_types.popitem(last=False)
    return types


_MISSING = object()


class Memo(Generic[_T]):
    """The last `SIZE` results of a computation, by key (thread-safe). A key that cannot be
    hashed (a user's callable object may define `__eq__` alone) keeps nothing."""

    def __init__(self) -> None:
        self._items: collections.OrderedDict[Hashable, _T] = collections.OrderedDict()
        self._lock = threading.Lock()
        _memos.append(self)

    def get(self, key: Hashable, compute: Callable[[], _T]) -> _T:
        """The result kept at `key`, else `compute()` kept there (an exception keeps nothing)."""
        try:
            with self._lock:
                found = self._items.get(key, _MISSING)
                if found is not _MISSING:
                    self._items.move_to_end(key)
        except TypeError:   # unhashable
            return compute()
        if found is not _MISSING:
            return found   # pyright: ignore[reportReturnType]
        value = compute()
        self.put(key, value)
        return value

    def put(self, key: Hashable, value: _T) -> None:
        try:
            with self._lock:
                self._items[key] = value
                while len(self._items) > SIZE:
                    self._items.popitem(last=False)
        except TypeError:   # unhashable
            pass

    def __contains__(self, key: Hashable) -> bool:
        try:
            with self._lock:
                return key in self._items
        except TypeError:   # unhashable
            return False

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def clear() -> None:
    """Forget every trace kept (and with it the functions they hold)."""
    for memo in _memos:
        memo.clear()
    with _lock:
        _recent_types.clear()
