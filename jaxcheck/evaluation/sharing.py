"""Which leaves evaluated directly share one compiled program (full mode's first call).

A leaf whose moved entries are evaluated directly (`engine.EntryLoss`, no `local_changes`)
gets a program of its own, and compiling it costs about as much as compiling the model's
training step, whatever the leaf's size. Leaves of one dtype can share one program
(`engine.SharedEntryLoss`: a point also says which of them it moves), at a price: under
`vmap` everything downstream of the first use of any of them depends on the point, so a point
of a leaf used later recomputes more than its own program would.

`groups` weighs the two with the cost model of `local_changes` (seconds per equation to
compile, cost units per second to evaluate), for a full check's first pass (two points per
entry): taken in the order of their first use, leaves join the group before them while the
compilation saved exceeds the evaluations added, over `local_changes.CALLS` calls.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .local_changes import CALLS, Cost, direct_cost

# A product of two operands that depend on the point (two leaves of a group moved upstream of
# it: a batch of small GEMMs) against one of an unbatched operand (one large GEMM): measured
# on a transformer block on 2 CPU cores, its group's evaluations 1.5-1.7x slower.
BOTH_BATCHED = 2.0


def groups(closed: Any, param_dynamic: Sequence[Any],
           candidates: Sequence[int]) -> list[tuple[int, ...]]:
    """Groups (two leaves or more, of one dtype) of the leaves at `candidates` (positions in
    `param_dynamic`, each evaluated directly) that share one program; `closed`: the loss's
    `local_changes.loss_jaxpr`."""
    buckets: dict[str, list[int]] = {}
    for p in candidates:
        buckets.setdefault(str(param_dynamic[p].dtype), []).append(p)

    def points(group: Sequence[int]) -> int:   # a full check's first pass
        return sum(2 * int(np.size(param_dynamic[p])) for p in group)

    def program(group: Sequence[int]) -> Cost:
        return direct_cost(closed, group, param_dynamic, BOTH_BATCHED)

    out = []
    for bucket in (b for b in buckets.values() if len(b) > 1):
        own = {p: program([p]) for p in bucket}
        # first used first: the most depends on it
        order = sorted(bucket, key=lambda p: -own[p].per_point)
        group, shared = [order[0]], own[order[0]]
        for p in order[1:]:
            joined = program(group + [p])
            saved = shared.seconds(0) + own[p].seconds(0) - joined.seconds(0)
            added = (joined.seconds(points(group + [p])) - joined.seconds(0)) - (
                shared.seconds(points(group)) - shared.seconds(0)
                + own[p].seconds(points([p])) - own[p].seconds(0))
            if saved > CALLS * added:
                group, shared = group + [p], joined
            else:
                if len(group) > 1:
                    out.append(tuple(sorted(group)))
                group, shared = [p], own[p]
        if len(group) > 1:
            out.append(tuple(sorted(group)))
    return out
