"""Localisation by group testing: follow a failing leaf's dirty path down to its wrong components.

A set S of components is *dirty* when some directional check restricted to S fails (its k
directions have random signs, so a dirty set shows with probability ≥ 1 − 2⁻ᵏ whatever the
cancellation; see `fast`), and *cleared* when k fresh directions on S all pass: an error in S
that the test can see then escapes with probability ≤ 2⁻ᵏ, as for a whole leaf.

**The dirty path.** From a range known (or, after a probe, thought) to be dirty, each step tests
the left half with a direction (`probe`); if it fails the search goes left, else the right half
is probed and, if it fails, the search goes right (`fast` derives the right half's probe from
the range's and the left's where it can: one evaluated probe a level). A probe that passes
clears nothing: the half it leaves behind is *unverified*. Only if neither half shows in its
probe are both tested with the rest of the k directions, as a clearing test (`dirty`), and
the search goes into every half that fails. A range of at most `block` components is checked
component by component with full mode's method, which gives the per-component numerical values
the report lists.

**One clearing test for the whole path.** The unverified halves left on the way, and the halves
cleared, make up the starting range D without the range H where the path ended (the block, or a
range whose halves both passed k directions). Instead of k directions for each of them, one
test of k fresh directions on D without H (`clear`; H is a hole in the directions' support)
clears them all at once: the Rademacher argument holds for any support, so an error in D∖H
that the test can see escapes with probability ≤ 2⁻ᵏ, as each half's own test would. If it
fails (or the path branched, leaving a dirty half inside D∖H), the unverified halves are
tested one by one with k directions (`dirty`) and the search follows each that fails, as from
the start. A probe that sends the search the wrong way (a clean half outside round-off at its
first step) costs a detour, never a verdict: the block then has no failing component, and the
clearing test sends the search back to the halves left unverified. The caller may take the
first path's clearing test into a test of its own (`defer`: `fast` holes the leaf's direction
in its clearing joint test) and resume the search where that fails (`resume`).

Cost: with one wrong component in n, log₂(n/block) levels of one to two probes, the block's
per-component checks (~2 evaluations each) and one clearing test of k directions:
O(log n + k) directions instead of the O(k·log n) of clearing every half with k directions. A
probe costs 2 evaluations per direction when it passes and a few more when it fails (its
Richardson levels), so a level costs about as much as checking a handful of components one by
one: that sets `block` (see `fast`). With b wrong components, each is found on its own path,
and each failing clearing test costs k directions per unverified half, O(b·k·log n) in all, as
before. Depth-first order finds the first wrong components after log₂(n/block) levels; the
search stops once `limit` have been found (a wholly wrong leaf would otherwise cost more than a
full check).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

Range = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Localisation:
    found: int                      # failing components found by the per-component checks
    tests: int                      # restricted directional tests run (probes, clearing tests)
    blocks: tuple[Range, ...]       # ranges checked component by component
    unexplored: tuple[Range, ...]   # dirty ranges left when `limit` was reached
    spread: tuple[Range, ...]       # dirty ranges whose halves were both clean
    # where the first path's clearing test was left to the caller (`defer`): the hole H (the
    # block where the path ended) and the halves left unverified on the way; None: not left
    deferred: tuple[Range, tuple[Range, ...]] | None = None


def localise(n: int, probe: Callable[[Range], bool],
             dirty: Callable[[Sequence[Range]], Sequence[bool]],
             clear: Callable[[Range, Range], bool], check_block: Callable[[Range], int],
             block: int, limit: int, defer: bool = False, resume: Sequence[Range] = (),
             found: int = 0) -> Localisation:
    """Search `[0, n)`, known to be dirty, for its failing components.

    **Arguments:**

    - `probe(range)`: whether a check of the range with its first few directions fails (a
      pass clears nothing).
    - `dirty(ranges)`: for each range, whether a test of k directions restricted to it fails
      (a pass clears the range).
    - `clear(range, hole)`: whether k fresh directions on the range without `hole` all pass
      (a pass clears the range without the hole).
    - `check_block(range)`: checks each component of the range; returns how many fail.
    - `block`: ranges of at most this many components are checked component by component.
    - `limit`: stop once this many failing components are found.
    - `defer`: where the first path (from `[0, n)`, unbranched) ended in a block with a
      failing component and left halves unverified, stop there instead of calling `clear`:
      the caller clears `[0, n)` without the block in a test of its own (`fast`: the clearing
      joint test), and where that fails resumes with `resume` and `found`
      (`Localisation.deferred`, `Localisation.found`).
    - `resume`, `found`: resume a deferred search: its unverified halves are tested one by
      one (`dirty`) and the search follows each that fails; `found`: failures found so far.

    ```python
    >>> wrong = {3, 700}
    >>> hits = lambda r: any(r[0] <= w < r[1] for w in wrong)
    >>> dirty = lambda rs: [hits(r) for r in rs]
    >>> clear = lambda r, h: not (hits((r[0], h[0])) or hits((h[1], r[1])))
    >>> count = lambda r: sum(r[0] <= w < r[1] for w in wrong)
    >>> loc = localise(1000, hits, dirty, clear, count, block=8, limit=10)
    >>> loc.found, loc.blocks
    (2, ((0, 7), (694, 702)))

    ```
    """
    known: list[Range] = [] if resume else [(0, n)]   # dirty ranges, not yet searched
    tests = 0
    blocks: list[Range] = []
    spread: list[Range] = []
    if resume:
        tests += len(resume)
        pending = sorted(resume, reverse=True)
        known += [r for r, bad in zip(pending, dirty(pending)) if bad]
    while known and found < limit:
        start = lo, hi = known.pop()
        unverified: list[Range] = []   # halves left behind after a passing probe
        branched = False               # a dirty half left on `known`: D∖H is not clean
        while hi - lo > block:
            mid = (lo + hi) // 2
            left, right = (lo, mid), (mid, hi)
            tests += 1
            if probe(left):
                unverified.append(right)
                lo, hi = left
                continue
            tests += 1
            if probe(right):
                unverified.append(left)
                lo, hi = right
                continue
            # neither half showed in its probe: both get the rest of the k directions
            tests += 2
            bad_left, bad_right = dirty([left, right])
            if bad_left and bad_right:
                known.append(right)
                branched = True
            if not (bad_left or bad_right):
                spread.append((lo, hi))
                break
            lo, hi = left if bad_left else right
        else:
            blocks.append((lo, hi))
            before = found
            found += check_block((lo, hi))
            if (defer and found > before and start == (0, n) and not branched and not known
                    and found < limit and unverified):
                return Localisation(found, tests, tuple(blocks), (), tuple(spread),
                                    ((lo, hi), tuple(unverified)))
        if found >= limit or not unverified:
            continue
        if not branched:
            tests += 1
            if clear(start, (lo, hi)):   # every unverified half at once
                continue
        tests += len(unverified)
        # index order: the leftmost dirty half is searched first (the stack is popped)
        unverified.sort(reverse=True)
        known += [r for r, bad in zip(unverified, dirty(unverified)) if bad]
    return Localisation(found, tests, tuple(blocks), tuple(known), tuple(spread))
