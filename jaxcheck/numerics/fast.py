"""Fast mode: verdicts per leaf from k random directions, then group testing to localise.

**How many directions.** With Rademacher signs (uᵢ = ±sᵢ, sᵢ > 0), let e be the error of the
gradient under test and j any component with eⱼ ≠ 0. Fix every sign but uⱼ: u·e = A ± sⱼeⱼ,
two values 2·sⱼ|eⱼ| apart, so at most one of them lies inside (−sⱼ|eⱼ|, sⱼ|eⱼ|). Hence for
*every* nonzero error vector, whatever cancellations it holds,

    P(|u·e| < max_j sⱼ|eⱼ|) ≤ 1/2,

and k independent directions all miss with probability ≤ 2⁻ᵏ (option `directions`). "Miss"
means |u·e| under the direction's tolerance τ: a wrong leaf is caught with probability ≥ 1 − 2⁻ᵏ as
soon as one component's error, scaled as in u, exceeds τ (about twice the tolerance, to
leave room for the numerical derivative's own error). Errors smaller than that are
indistinguishable from round-off along that direction. Because u is normalised by √m, a single
wrong entry contributes |eⱼ|·sⱼ/√m: fast mode is √m less sensitive to one entry than full mode,
and the bisection gains the factor back as the ranges shrink.

Gaussian directions would give P(u·e = 0) = 0 but no bound on P(|u·e| < τ) that holds without
knowing how e is spread; Rademacher signs give the distribution-free 1/2 above.

**Order of the tests.** With two leaves or more of one dtype, `JOINT_MIN_SIZE` entries or
more, and room for the joint program's copies of the params (`_fits_together`: a model near
the size of memory is tested one leaf at a time), all leaves are first tested together
(`joint`: k directions, each moving every leaf along its own direction at once), and each
leaf's Taylor test runs in one program for all. If every direction is within round-off, the
leaves it covers pass. Otherwise each leaf is probed (`probe`: one direction of its own,
screened at its first step; it passes and fails nothing):

- a leaf whose probe is outside round-off gets its own test of k directions, and if it fails
  is searched for its wrong components (`group_testing`);
- the others (two or more) are cleared together by one more joint test of k + 1 directions
  with fresh numbers (`JOINT_NUMBERS + k` on); if it fails, or leaves one uncovered, each of
  them gets its own test of k + 1 directions (a single one gets its own test of k).

A wrong leaf L then passes only if the first joint test misses it (≤ 2⁻ᵏ), or that test
failed and what follows passes L. After the probe, which draws fresh signs and passes nothing,
L goes either to its own test (misses with probability ≤ 2⁻ᵏ) or to the clearing test, which
misses it with probability ≤ 2⁻⁽ᵏ⁺¹⁾ (the Rademacher bound holds for the errors of all leaves
together, whatever the others'), and where that fails, to its own test of k + 1 fresh
directions (≤ 2⁻⁽ᵏ⁺¹⁾): ≤ 2⁻ᵏ on either branch. In all ≤ 2·2⁻ᵏ, so k = 21 (the default) keeps
it ≤ 2⁻²⁰ ≈ 9.5e-7 ≤ 1e-6; in general k = ⌈log₂(2/p)⌉ for a miss probability p. Other params go
straight to the tests of each leaf (≤ 2⁻ᵏ).

**A leaf's own test stops at its first FAIL.** A leaf is wrong as soon as one direction FAILs
after the full escalation; the directions outside round-off at the first step are escalated
1, 2, 4, … at a time, and where the first `NOISE_SAMPLES` directions are all outside, the
noise is measured on them and they are escalated before the others are evaluated at all
(`check_directions(..., until_fail=True)`). The directions never escalated are left out of
the verdict (`DirectionalChecks.undecided` counts them): no direction FAILs unless confirmed,
and a leaf passes only when all k were decided.

**Localising.** The probes that choose the way down (`outside_roundoff`: the first step's
screen of one direction, 2 evaluations) are not verdicts and clear nothing; a component FAILs
only by its own check (`check_block`, full mode's escalation), and a range is called clean only
when k fresh directions on it pass with the escalation (the clearing test, or `dirty`), so
the search keeps both the bound above and "never a false alarm". With one wrong entry among
n = 10⁶ (a 1000 × 1000 weight): ~1.5·log₂(n/`BLOCK`) ≈ 27 probes (~54 evaluations), `BLOCK`
components (~8 and the failing one's Richardson levels) and k directions (2k + 1), where
bisecting with k directions per clean half took ~1,000. In all, for the 1M-parameter MLP of
`bench/fast_mode_1m.py` with one wrong entry: the joint and Taylor tests (67), six probes (12),
the wrong leaf's test stopped at its first FAIL (8 + 24 noise + 10), the search (~114) and
the clearing test of the other five leaves (45): ~274 evaluations, where testing every leaf
on its own after the joint test, every direction escalated, took 661.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

from ..evaluation import engine
from ..evaluation.directions import Directions
from ..inputs.placement import entries, flatten
from ..plan.tasks import LeafTask
from . import verdicts as v
from .components import ComponentResults
from .direction_checks import DirectionalChecks, check_directions, outside_roundoff
from .group_testing import localise
from .joint import JOINT_NUMBERS, joint_screen
from .results import LeafReport
from .taylor import LEVELS, TaylorResult, taylor_test, taylor_tests

# Directions of a clearing test evaluated before the rest (see `dirty` below).
FIRST_DIRECTIONS = 2
# Directions of a probe on the dirty path (`group_testing`; see `probe` below).
PROBE_DIRECTIONS = 1
# Ranges of at most this many components are checked component by component: a level of the
# dirty path costs ~1.5 probes of 2 evaluations, a component ~2 (`group_testing`).
BLOCK = 4
# Parameter entries from which leaves are first tested together (`joint`). Below, a test of
# each leaf costs milliseconds and compiling the joint program would cost more than it saves.
JOINT_MIN_SIZE = 1 << 16


def _report(task: LeafTask, g: Any, examined: Sequence[ComponentResults],
            directions: DirectionalChecks, taylor: TaylorResult) -> LeafReport:
    """The leaf's report: the verdict of `directions`, and the components examined one by one."""
    def stack(name: str, dtype: npt.DTypeLike = np.float64) -> np.ndarray:
        parts = [getattr(r, name) for r in examined]
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    idx = stack("indices", np.int64)
    # only the components examined come back to the host
    named = entries(g, idx).astype(np.float64)
    return LeafReport(task.path, tuple(task.leaf.shape), task.dtype, named, stack("numerical"),
                      stack("tolerance"), stack("status", np.int8), indices=idx,
                      directions=directions, taylor=taylor)


def leaf_directions(task: LeafTask, g: Any, rounding: Any, seed: int) -> Directions:
    """The leaf's directions (flat g and its rounding bound, on device): one per leaf, so that
    its probe, its own test and the search draw distinct direction numbers."""
    return Directions(task.problem, task.position, task.param_dynamic, task.arg_dynamic,
                      task.leaf_number, seed, g, rounding, task.batch_size)


def probe(task: LeafTask, dirs: Directions, f0: float, j: int = PROBE_DIRECTIONS) -> bool:
    """Whether any of j fresh directions on the whole leaf is outside round-off at the first
    step (`outside_roundoff`, 2 evaluations a direction). Where to look, not a verdict: it
    passes and fails nothing. A leaf with a single wrong entry that the joint test saw shows
    in every direction (|u·e| = sⱼ|eⱼ|·c whatever the signs), any other wrong leaf with
    probability ≥ 1 − 2⁻ʲ."""
    n = dirs.size
    return bool(np.any(outside_roundoff(dirs, f0, dirs.fresh(j), np.zeros(j, np.int64),
                                        np.full(j, n), task.eps_f, task.rel_step,
                                        task.safety)))


def check_leaf_fast(task: LeafTask, g: Any, rounding: Any,
                    taylor: tuple[float, TaylorResult] | None, k: int, seed: int,
                    limit: int, dirs: Directions | None = None,
                    own: int | None = None) -> tuple[LeafReport, dict[str, int]]:
    """Fast-mode report of one leaf tested on its own (flat g and its rounding bound, on
    device), and counts of the work done (`evaluations`: all of `dirs`', a probe's included).
    `taylor`: f(θ) and the leaf's Taylor test if already done (`taylor_tests`); `dirs`: the
    leaf's directions if already drawn from (`probe`); `own`: directions of the leaf's own
    test (default k; k + 1 after a failed clearing test, see the module docstring).

    The leaf's own test stops at its first confirmed FAIL (`check_directions(...,
    until_fail=True)`): the directions outside round-off at the first step are escalated 1,
    2, 4, … at a time, so a wrong leaf costs 2k evaluations, the noise estimate and one
    direction's Richardson levels instead of every direction's. Its report holds the
    directions decided; the others are counted in `DirectionalChecks.undecided`."""
    n = g.size
    if dirs is None:
        dirs = leaf_directions(task, g, rounding, seed)
    # direction 0 is also the first of the whole-leaf test below (when nothing was drawn)
    f0, leaf_taylor = taylor if taylor is not None else taylor_test(dirs, 0, task.eps_f)

    def analytic_at(point):
        return task.analytic.leaves(dirs.at(point))[task.leaf_number].reshape(-1)

    noise: float | None = None   # f's rounding noise near θ, measured once per leaf

    def directions(numbers, lo, hi, hole=None, until_fail=False) -> DirectionalChecks:
        nonlocal noise
        result = check_directions(dirs, f0, numbers, lo, hi, task.eps_f, task.rel_step,
                                  task.safety, analytic_at, noise, hole, until_fail)
        noise = result.noise if result.noise > 0 else noise
        return result

    def test_with(ranges, j):
        lo = np.repeat([r[0] for r in ranges], j)
        hi = np.repeat([r[1] for r in ranges], j)
        result = directions(dirs.fresh(j * len(ranges)), lo, hi)
        return [bool(np.any(result.status[i * j:(i + 1) * j] == v.FAIL))
                for i in range(len(ranges))]

    k_own = k if own is None else own
    whole = directions(dirs.fresh(k_own), np.zeros(k_own, np.int64), np.full(k_own, n),
                       until_fail=True)
    examined: list[ComponentResults] = []
    first = min(k, FIRST_DIRECTIONS)

    def probe_range(r):
        # Where to look next, not a verdict: a dirty range usually shows outside round-off in
        # its first direction (probability >= 1/2 each, 1 for a single wrong entry the range's
        # scale can see); a clean one that looks dirty only costs a detour (`group_testing`).
        j = min(k, PROBE_DIRECTIONS)
        return bool(np.any(outside_roundoff(dirs, f0, dirs.fresh(j), np.full(j, r[0]),
                                            np.full(j, r[1]), task.eps_f, task.rel_step,
                                            task.safety)))

    def dirty(ranges):
        # The first directions, and the rest of the k only for ranges still looking clean: a
        # range is called clean only after k fresh directions all pass, as for the leaf.
        verdicts = test_with(ranges, first)
        rest = [r for r, bad in zip(ranges, verdicts) if not bad]
        if rest and k > first:
            more = iter(test_with(rest, k - first))
            verdicts = [bad or next(more) for bad in verdicts]
        return verdicts

    def clear(r, hole):
        # k fresh directions on r without the hole: the ranges left unverified on the way down
        lo, hi = np.full(k, r[0]), np.full(k, r[1])
        holes = (np.full(k, hole[0]), np.full(k, hole[1]))
        # stops at its first FAIL: a range is cleared only when all k were decided
        return directions(dirs.fresh(k), lo, hi, holes, until_fail=True).n_fail == 0

    def check_block(r):
        # A direction on one component j is ±sⱼ·eⱼ (sⱼ: max(1,|θⱼ|) rounded up to a power of
        # two): its check is full mode's per-component check (steps up to 2x full mode's, the
        # same error model and kink analysis), evaluated by the function already compiled for
        # this leaf; the values are divided back by uⱼ.
        idx = np.arange(r[0], r[1])
        res = directions(dirs.fresh(idx.size), idx, idx + 1)
        assert res.u_sum is not None  # check_directions always sets it
        examined.append(ComponentResults(idx, res.status, res.numerical / res.u_sum,
                                         res.tolerance / np.abs(res.u_sum), res.evaluations))
        return int(np.sum(res.status == v.FAIL))

    tests = 0
    if whole.n_fail:
        loc = localise(n, probe_range, dirty, clear, check_block, block=max(1, BLOCK),
                       limit=limit)
        tests = loc.tests
    counts = {"evaluations": dirs.evaluations, "tests": tests}
    return _report(task, g, examined, whole, leaf_taylor), counts


@jax.jit
def _roundings(gs, eps_g, eps_out):
    """`verdicts.analytic_rounding` of every leaf as its (slope, offset), in one program."""
    return [jnp.stack(v.analytic_rounding_coefficients(e, g, o)).astype(g.dtype)
            for g, e, o in zip(gs, eps_g, eps_out)]


def _on_device(tasks: Sequence[LeafTask], gs: list[Any]) -> tuple[list[Any], list[Any]]:
    """The flat gradients in the working dtype (float32 at least, for the sums) and the bound
    on their rounding (as `directions.linear_bound`'s coefficients), computed where they
    live: a sharded gradient never reaches the host. `gs` is emptied as it goes, so that one
    leaf at a time exists in both shapes."""
    wide = np.promote_types(tasks[0].leaf.dtype, np.float32)
    gs_device = []
    while gs:
        gs_device.append(flatten(jnp.asarray(gs.pop(0))).astype(wide))
    return gs_device, _roundings(gs_device, [t.eps_g for t in tasks],
                                 [t.eps_g_out for t in tasks])


def _together(tasks: Sequence[LeafTask], gs_device: Sequence[Any], roundings: Sequence[Any],
              k: int, seed: int):
    """Every leaf's Taylor test (one program) and the joint test."""
    first = tasks[0]
    positions, numbers = [t.position for t in tasks], [t.leaf_number for t in tasks]
    taylor = taylor_tests(first.problem, positions, numbers, first.param_dynamic,
                          first.arg_dynamic, gs_device, roundings, seed, first.eps_f)
    return taylor, _joint(tasks, gs_device, roundings, k, seed)


def _joint(tasks: Sequence[LeafTask], gs_device: Sequence[Any], roundings: Sequence[Any],
           k: int, seed: int, first_number: int = JOINT_NUMBERS):
    """The joint test of `tasks`' leaves: k directions numbered from `first_number`."""
    first = tasks[0]
    return joint_screen(first.problem, [t.position for t in tasks],
                        [t.leaf_number for t in tasks], first.param_dynamic, first.arg_dynamic,
                        gs_device, roundings, k, seed, first.eps_f, first.rel_step,
                        first.safety, [t.path for t in tasks], first_number)


# A joint direction's program holds every leaf's direction, its magnitudes and the point
# (measured: ~3x the params' bytes beside them).
JOINT_COPIES = 3


def _fits_together(gs: Sequence[Any]) -> bool:
    """Whether the joint test's program fits the memory budget of the params' devices; if not
    (a model near the size of memory), each leaf is tested alone, one leaf's copies at a time."""
    total = sum(int(g.size) * g.dtype.itemsize for g in gs)
    devices = tuple(next(iter(gs)).devices())
    return JOINT_COPIES * total <= engine.total_memory_budget(devices)


def check_all_fast(tasks: Sequence[LeafTask], k: int, seed: int,
                   limit: int) -> tuple[tuple[LeafReport, ...], dict[str, Any]]:
    gs, roundings = _on_device(tasks, tasks[0].analytic.device_leaves())
    info: dict[str, Any] = {"directions": k}
    evaluations = tests = 0
    covered: tuple[int, ...] = ()
    failed_joint = False
    if (len(tasks) > 1 and sum(g.size for g in gs) >= JOINT_MIN_SIZE and _fits_together(gs)
            and len({t.leaf.dtype for t in tasks}) == 1):  # one dtype: one step for all
        taylor, screen = _together(tasks, gs, roundings, k, seed)
        evaluations += (1 + LEVELS) * len(tasks) + screen.checks.evaluations
        covered = screen.covered if screen.passed else ()
        failed_joint = not screen.passed
        info["joint"] = {"passed": screen.passed, "covered": [
            t.path for t in tasks if t.leaf_number in covered]}
    else:
        taylor = [None] * len(tasks)
    leaves: list[LeafReport | None] = [None] * len(tasks)
    dirs: list[Directions | None] = [None] * len(tasks)
    pending: list[int] = []   # leaves left to the clearing test (their probe within round-off)

    def own_test(i: int, own: int | None = None) -> None:
        nonlocal evaluations, tests
        report, counts = check_leaf_fast(tasks[i], gs[i], roundings[i], taylor[i], k, seed,
                                         limit, dirs[i], own)
        leaves[i] = report
        evaluations += counts["evaluations"]
        tests += counts["tests"]

    for i, (task, g, rounding, leaf_taylor) in enumerate(zip(tasks, gs, roundings, taylor)):
        if task.leaf_number in covered:  # passed by the joint test
            assert leaf_taylor is not None  # from `_together`, as `covered` is
            leaves[i] = _report(task, g, (), screen.checks, leaf_taylor[1])
        elif failed_joint:
            assert leaf_taylor is not None
            dirs[i] = leaf_dirs = leaf_directions(task, g, rounding, seed)
            if probe(task, leaf_dirs, leaf_taylor[0]):
                own_test(i)
            else:
                pending.append(i)
        else:
            own_test(i)
    if len(pending) == 1:   # a clearing test of one leaf is its own test
        own_test(pending[0])
    elif pending:
        sub = [tasks[i] for i in pending]
        clearing = _joint(sub, [gs[i] for i in pending], [roundings[i] for i in pending],
                          k + 1, seed, JOINT_NUMBERS + k)
        evaluations += clearing.checks.evaluations
        cleared = clearing.covered if clearing.passed else ()
        info["clearing"] = {"passed": clearing.passed, "directions": k + 1,
                            "leaves": [t.path for t in sub],
                            "covered": [t.path for t in sub if t.leaf_number in cleared]}
        for i in pending:
            if tasks[i].leaf_number in cleared:
                leaf_taylor, leaf_dirs = taylor[i], dirs[i]
                assert leaf_taylor is not None and leaf_dirs is not None
                leaves[i] = _report(tasks[i], gs[i], (), clearing.checks, leaf_taylor[1])
                evaluations += leaf_dirs.evaluations   # its probe
            else:   # k + 1 directions after the clearing test: the bound in the docstring
                own_test(i, k + 1)
    reports = tuple(leaf for leaf in leaves if leaf is not None)
    assert len(reports) == len(tasks)
    return reports, {**info, "evaluations": evaluations, "localisation_tests": tests}
