"""Fast mode: a verdict per leaf from k random directions, then group testing to localise.

**How many directions.** With Rademacher signs (uᵢ = ±sᵢ, sᵢ > 0), let e be the error of the
gradient under test and j any component with eⱼ ≠ 0. Fix every sign but uⱼ: u·e = A ± sⱼeⱼ,
two values 2·sⱼ|eⱼ| apart, so at most one of them lies inside (−sⱼ|eⱼ|, sⱼ|eⱼ|). Hence for
*every* nonzero error vector, whatever cancellations it holds,

    P(|u·e| < max_j sⱼ|eⱼ|) ≤ 1/2,

and k independent directions all miss with probability ≤ 2⁻ᵏ. k = 20 gives 2⁻²⁰ ≈ 9.5e-7
≤ 1e-6 (option `directions`; choose k = ⌈log₂(1/p)⌉ for a miss probability p). "Miss" means
|u·e| under the direction's tolerance τ: a wrong leaf is caught with probability ≥ 1 − 2⁻ᵏ as
soon as one component's error, scaled as in u, exceeds τ (about twice the tolerance, to
leave room for the numerical derivative's own error). Errors smaller than that are
indistinguishable from round-off along that direction. Because u is normalised by √m, a single
wrong entry contributes |eⱼ|·sⱼ/√m: fast mode is √m less sensitive to one entry than full mode,
and the bisection gains the factor back as the ranges shrink.

Gaussian directions would give P(u·e = 0) = 0 but no bound on P(|u·e| < τ) that holds without
knowing how e is spread; Rademacher signs give the distribution-free 1/2 above.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import _verdicts as v
from ._components import ComponentResults
from ._directional import check_directions
from ._directions import Directions
from ._full import LeafTask
from ._group_testing import localise
from ._report import LeafReport
from ._taylor import taylor_test


# Directions of a subset test evaluated before the rest (see `dirty` below).
FIRST_DIRECTIONS = 2


def check_leaf_fast(task: LeafTask, g_leaf: np.ndarray, k: int, seed: int,
                    limit: int) -> tuple[LeafReport, dict[str, int]]:
    """Fast-mode report of one leaf, and counts of the work done."""
    g = g_leaf.reshape(-1)
    n = g.size
    rounding = v.analytic_rounding(task.eps_g, g)
    dirs = Directions(task.problem, task.position, task.param_dynamic, task.arg_dynamic,
                      task.leaf_number, seed, g, rounding, task.batch_size)
    # direction 0 is also the first of the whole-leaf test below
    f0, taylor = taylor_test(dirs, 0, task.eps_f)

    def analytic_at(point):
        return task.analytic.leaves(dirs.at(point))[task.leaf_number].reshape(-1)

    def test(ranges: Sequence[tuple[int, int]]):
        lo = np.repeat([r[0] for r in ranges], k)
        hi = np.repeat([r[1] for r in ranges], k)
        return check_directions(dirs, f0, dirs.fresh(k * len(ranges)), lo, hi, task.eps_f,
                                task.rel_step, task.safety, analytic_at)

    whole = test([(0, n)])
    examined: list[ComponentResults] = []

    def test_with(ranges, j):
        lo = np.repeat([r[0] for r in ranges], j)
        hi = np.repeat([r[1] for r in ranges], j)
        result = check_directions(dirs, f0, dirs.fresh(j * len(ranges)), lo, hi, task.eps_f,
                                  task.rel_step, task.safety, analytic_at)
        return [bool(np.any(result.status[i * j:(i + 1) * j] == v.FAIL))
                for i in range(len(ranges))]

    def dirty(ranges):
        # A dirty range usually fails its first direction (probability >= 1/2 each), so a
        # few directions first, and the rest of the k only for ranges still looking clean.
        # A range is called clean only after k fresh directions all pass, as for the leaf.
        first = min(k, FIRST_DIRECTIONS)
        verdicts = test_with(ranges, first)
        rest = [r for r, bad in zip(ranges, verdicts) if not bad]
        if rest and k > first:
            more = iter(test_with(rest, k - first))
            verdicts = [bad or next(more) for bad in verdicts]
        return verdicts

    def check_block(r):
        # A direction on one component j is ±max(1,|θⱼ|)·eⱼ: its check is full mode's
        # per-component check (same steps, same error model and kink analysis), evaluated by
        # the function already compiled for this leaf; the values are divided back by uⱼ.
        idx = np.arange(r[0], r[1])
        res = check_directions(dirs, f0, dirs.fresh(idx.size), idx, idx + 1, task.eps_f,
                               task.rel_step, task.safety, analytic_at)
        examined.append(ComponentResults(idx, res.status, res.numerical / res.u_sum,
                                         res.tolerance / np.abs(res.u_sum), res.evaluations))
        return int(np.sum(res.status == v.FAIL))

    tests = 0
    if whole.n_fail:
        # a clean half costs 2k evaluations to clear, checking s components ~2s each
        loc = localise(n, dirty, check_block, block=max(1, 2 * k), limit=limit)
        tests = loc.tests
    idx = (np.concatenate([r.indices for r in examined]) if examined
           else np.zeros(0, np.int64))
    stack = (lambda name: np.concatenate([getattr(r, name) for r in examined]) if examined
             else np.zeros(0))
    status = (np.concatenate([r.status for r in examined]) if examined
              else np.zeros(0, np.int8))
    report = LeafReport(task.path, tuple(task.leaf.shape), task.dtype, g[idx],
                        stack("numerical"), stack("tolerance"), status, indices=idx,
                        directions=whole, taylor=taylor)
    counts = {"evaluations": dirs.evaluations, "tests": tests}
    return report, counts


def check_all_fast(tasks: Sequence[LeafTask], k: int, seed: int,
                   limit: int) -> tuple[tuple[LeafReport, ...], dict[str, Any]]:
    leaves, evaluations, tests = [], 0, 0
    for task, g in zip(tasks, tasks[0].analytic.leaves()):
        report, counts = check_leaf_fast(task, g, k, seed, limit)
        leaves.append(report)
        evaluations += counts["evaluations"]
        tests += counts["tests"]
    return tuple(leaves), {"directions": k, "evaluations": evaluations,
                           "localisation_tests": tests}
