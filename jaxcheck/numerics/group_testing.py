"""Localisation by group testing: bisect a failing leaf down to its wrong components.

A set S of components is *dirty* when some directional check restricted to S fails (its k
directions have random signs, so a dirty set shows with probability ≥ 1 − 2⁻ᵏ whatever the
cancellation; see `fast`). Starting from the whole failing leaf, each dirty range is split in
two halves and both are tested; clean halves are dropped, dirty ones split again. A range of at
most `block` components is checked component by component with full mode's method, which gives
the per-component numerical values the report lists.

Cost: with b wrong components in n, at most b dirty ranges per level and log₂(n/block) levels,
so O(b·log n) tests of k directions each. Clearing a clean half costs 2k evaluations (a dirty
one usually fails its first directions, tried first) and a
per-component check of s components ~2s, so bisecting further stops paying at s ≈ 2k: that is
the default `block`. Depth-first order finds the first wrong components after
log₂(n/block) levels; the search stops once `limit` have been found (a wholly wrong leaf
would otherwise cost more than a full check).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

Range = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Localisation:
    found: int                      # failing components found by the per-component checks
    tests: int                      # restricted directional tests run
    blocks: tuple[Range, ...]       # ranges checked component by component
    unexplored: tuple[Range, ...]   # dirty ranges left when `limit` was reached
    spread: tuple[Range, ...]       # dirty ranges whose halves were both clean


def localise(n: int, dirty: Callable[[Sequence[Range]], Sequence[bool]],
             check_block: Callable[[Range], int], block: int, limit: int) -> Localisation:
    """Bisect `[0, n)`, known to be dirty.

    **Arguments:**

    - `dirty(ranges)`: for each range, whether a directional check restricted to it fails.
    - `check_block(range)`: checks each component of the range; returns how many fail.
    - `block`: ranges of at most this many components are checked component by component.
    - `limit`: stop once this many failing components are found.

    ```python
    >>> wrong = {3, 700}
    >>> hits = lambda rs: [any(lo <= w < hi for w in wrong) for lo, hi in rs]
    >>> count = lambda r: sum(r[0] <= w < r[1] for w in wrong)
    >>> loc = localise(1000, hits, count, block=8, limit=10)
    >>> loc.found, loc.blocks
    (2, ((0, 7), (694, 702)))

    ```
    """
    stack: list[Range] = [(0, n)]
    found = tests = 0
    blocks: list[Range] = []
    spread: list[Range] = []
    while stack and found < limit:
        lo, hi = stack.pop()
        if hi - lo <= block:
            blocks.append((lo, hi))
            found += check_block((lo, hi))
            continue
        mid = (lo + hi) // 2
        halves = [(lo, mid), (mid, hi)]
        verdicts = list(dirty(halves))
        tests += 2
        if not any(verdicts):
            spread.append((lo, hi))
        # push the right half first so the left one is explored first (index order)
        stack += [h for h, bad in zip(halves[::-1], verdicts[::-1]) if bad]
    return Localisation(found, tests, tuple(blocks), tuple(stack), tuple(spread))
