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

**Order of the tests.** With two leaves or more of one dtype (of `JOINT_MIN_SIZE` entries or
more: any size, since one program for all leaves compiles faster than one per leaf), and room
for the joint program's copies of the params (`_fits_together`: a model near the size of
memory is tested one leaf at a time), all leaves are first tested together (`joint`: k + 1
directions, each moving every leaf along its own direction at once), and each leaf's Taylor
test runs in the same program, which also serves the clearing test below (on a correct
model, the only program compiled besides the gradient's). If every direction is within
round-off, the leaves it covers pass. Otherwise each leaf is probed (`probe`: one direction
of its own, screened at its first step; it passes and fails nothing):

- a leaf whose probe is outside round-off is searched at once for its wrong components
  (`group_testing`, `LeafCheck.decide(probed=True)`). A component FAIL confirmed by its own
  check (full mode's escalation) fails the leaf; only where the search confirms none does the
  leaf's own test of k directions decide it (it passes only if all k pass, as any leaf);
- the others (with the searched leaves' clearing tests, below) are cleared together: by the
  first joint test again, corrected (below), where every leaf is pending; else, or where that
  fails, by one more joint test of k + 1 directions with fresh numbers (`JOINT_NUMBERS + k + 1`
  on). If that fails, or leaves one uncovered, each of them gets its own test of k + 1
  directions (a single one gets its own test of k), and each search goes on with the halves it
  left unverified (k + 1 directions each).

**The search's clearing test joins the clearing joint test.** A search whose first path ends
in a block with a confirmed FAIL leaves its clearing test (the leaf without that block H,
`group_testing`'s `defer`) to the clearing joint test, where the leaf's direction has a hole at
H (`joint_screen(..., holes)`): one test of k + 1 directions instead of 2k + 1 evaluations for
it and 2(k + 1) + 1 for the others. The Rademacher argument holds for any support, so for the
errors of every leaf (each outside its hole) together.

**The first joint test clears again, corrected.** Where every leaf is pending (each probe
within round-off but those of the searched leaves, and each search's first path ended in a
block H with a confirmed FAIL), the first test's own values are judged again with the
gradient on each H replaced by the derivatives its block check measured
(`joint.corrected_screen`): u·g of a direction gains Σⱼ∈H uⱼ·(numericalⱼ − gⱼ) and its
tolerance Σⱼ∈H |uⱼ|·toleranceⱼ, so what it tests is u·e over the errors outside the blocks.
The blocks were chosen by the probes, whose signs are independent of the first test's: for
any choice, the first test's signs outside the blocks are Rademacher, and an error there is
missed with probability ≤ 2⁻⁽ᵏ⁺¹⁾, as by the clearing joint test, without evaluating the
loss. The clearing joint test runs only where this does not pass.

**The bound.** A wrong leaf L, or a wrong entry of a searched leaf outside its checked blocks,
escapes only if one of the tests it goes through passes it (the probe, which draws fresh
signs, passes nothing): the first joint test (≤ 2⁻⁽ᵏ⁺¹⁾), and where that fails, the corrected
first test (≤ 2⁻⁽ᵏ⁺¹⁾), the clearing joint test (≤ 2⁻⁽ᵏ⁺¹⁾, whatever the other leaves'
errors), and where those fail, its own test of k + 1 fresh directions or, for a searched
leaf's rest, tests of k + 1 directions on each unverified half (≤ 2⁻⁽ᵏ⁺¹⁾: an error in a half
escapes only if that half's test misses it): ≤ 4·2⁻⁽ᵏ⁺¹⁾ = 2·2⁻ᵏ. Where it goes from the
first test to a test of k (its own test: a searched leaf with no confirmed FAIL, or the only
leaf pending when unsearched), ≤ 2⁻⁽ᵏ⁺¹⁾ + 2⁻ᵏ. So k = 21 (the default) keeps it ≤ 2⁻²⁰ ≈
9.5e-7 ≤ 1e-6; in general k = ⌈log₂(2/p)⌉ for a miss probability p. Other params go straight
to the tests of each leaf (≤ 2⁻ᵏ).

**A leaf's own test stops at its first FAIL.** A leaf is wrong as soon as one direction FAILs
after the full escalation; the directions outside round-off at the first step are escalated
1, 2, 4, … at a time, and where the first `NOISE_SAMPLES` directions are all outside, the
noise is measured on them and they are escalated before the others are evaluated at all
(`check_directions(..., until_fail=True)`). The directions never escalated are left out of
the verdict (`DirectionalChecks.undecided` counts them; a searched leaf failed by a component
has none decided and all k undecided): no direction FAILs unless confirmed, and a leaf passes
only when all k were decided.

**Localising.** The probes that choose the way down (`PathValue`: the first step's screen of
one direction, 2 evaluations) are not verdicts and clear nothing. The halves of a range that
showed take its direction restricted to them, so their values add up to the range's: the left
half is measured, the right half's value is derived (the range's less the left's, within the
sum of their tolerances) and measured only where that does not show, so a level costs one
probe. A component FAILs only by its own check (`check_block`, full mode's escalation), and a
range is called clean only when k fresh directions on it pass with the escalation (the
clearing test, or `dirty`), so the search keeps both the bound above and "never a false
alarm". With one wrong entry among n = 10⁶ (a 1000 × 1000 weight): log₂(n/`BLOCK`) ≈ 18 probes
(~36 evaluations), `BLOCK` components (~8, the noise estimate and the failing one's Richardson
levels) and its share of the clearing joint test, where bisecting with k directions per clean
half took ~1,000. In all, for the 1M-parameter MLP of `bench/fast_mode_1m.py` with one wrong
entry: the joint and Taylor tests (69), six probes (12), the path (36), the block (18) and the
corrected first test, which clears the other five leaves and W1 without the block (0): 135
evaluations, where the clearing joint test in its place took 178 (a quarter of the time), the
wrong leaf's own test before the search and a clearing test of its own 274, and testing every
leaf on its own after the joint test, every direction escalated, 661.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

from ..evaluation import engine
from ..evaluation.directions import Directions, gradient_input
from ..inputs.placement import (
    entries,
    finite_and_squares,
    flatten,
    release_freed_memory,
)
from ..plan.tasks import LeafTask
from . import verdicts as v
from .components import ComponentResults
from .direction_checks import DirectionalChecks, check_directions, roundoff_margins
from .group_testing import localise
from .joint import (
    JOINT_NUMBERS,
    JointScreen,
    compile_ahead,
    corrected_screen,
    joint_screen,
    one_vector,
    row_count,
)
from .results import LeafReport
from .taylor import LEVELS, TaylorResult, taylor_test, taylor_tests

# Directions of a clearing test evaluated before the rest (see `dirty` below).
FIRST_DIRECTIONS = 2
# Directions of a probe on the dirty path (`group_testing`; see `probe` below).
PROBE_DIRECTIONS = 1
# Ranges of at most this many components are checked component by component: a level of the
# dirty path costs ~1.5 probes of 2 evaluations, a component ~2 (`group_testing`).
BLOCK = 4
# Parameter entries from which leaves are first tested together (`joint`): from any size,
# since one program holds the joint test and every leaf's Taylor test, where testing each
# leaf on its own compiles a program per leaf (most of a first check's time).
JOINT_MIN_SIZE = 0


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


def _scale(m: int, dtype: npt.DTypeLike) -> float:
    """c of a direction on m entries (`directions.magnitudes`): one over the power of two in
    [√m, 2√m)."""
    x = np.sqrt(np.asarray(m, dtype))
    mantissa, exponent = np.frexp(x)
    return float(1 / x) if mantissa == 0.5 else float(2.0 ** -int(exponent))


@dataclasses.dataclass(frozen=True)
class PathValue:
    """A probe's value on the range [lo, hi) along direction `number` restricted to it, per
    unit of the direction's scale c: (central difference − u·g)/c and its round-off
    tolerance/c. The direction's signs are those of the same number on any range holding
    this one (`directions`), so the values of a range and of its halves add up: the right
    half's is the range's less the left half's, within the sum of their tolerances."""

    lo: int
    hi: int
    number: int
    diff: float
    tol: float

    @property
    def shows(self) -> bool:
        """Outside round-off (a NaN shows)."""
        return not abs(self.diff) <= self.tol


def measure(task: LeafTask, dirs: Directions, f0: float, number: int, lo: int,
            hi: int) -> PathValue:
    """`PathValue` of direction `number` on [lo, hi) (2 evaluations)."""
    diff, tol = roundoff_margins(dirs, f0, np.array([number]), np.array([lo]), np.array([hi]),
                                 task.eps_f, task.rel_step, task.safety)
    c = _scale(hi - lo, dirs.dtype)
    return PathValue(lo, hi, number, float(diff[0]) / c, float(tol[0]) / c)


def probe(task: LeafTask, dirs: Directions, f0: float) -> PathValue:
    """One fresh direction on the whole leaf at its first step (2 evaluations): whether it is
    outside round-off (`PathValue.shows`). Where to look, not a verdict: it passes and fails
    nothing. A leaf with a single wrong entry that the joint test saw shows in every
    direction (|u·e| = sⱼ|eⱼ|·c whatever the signs), any other wrong leaf with probability
    ≥ 1/2. Its value is the first of the search's dirty path (`LeafCheck`)."""
    return measure(task, dirs, f0, int(dirs.fresh(1)[0]), 0, dirs.size)


class LeafCheck:
    """One leaf's checks in fast mode (flat g and its rounding bound, on device): its own test,
    the search for its wrong components, and its report. `taylor`: f(θ) and the leaf's Taylor
    test if already done (`taylor_tests`); `dirs`: the leaf's directions if already drawn from
    (`probe`); `own`: directions of the leaf's own test (default k; k + 1 after a failed
    clearing test, see the module docstring).

    The leaf's own test stops at its first confirmed FAIL (`check_directions(...,
    until_fail=True)`): the directions outside round-off at the first step are escalated 1,
    2, 4, … at a time, so a wrong leaf costs 2k evaluations, the noise estimate and one
    direction's Richardson levels instead of every direction's. Its report holds the
    directions decided; the others are counted in `DirectionalChecks.undecided`."""

    def __init__(self, task: LeafTask, g: Any, rounding: Any,
                 taylor: tuple[float, TaylorResult] | None, k: int, seed: int, limit: int,
                 dirs: Directions | None = None, own: int | None = None,
                 root: PathValue | None = None):
        self.task, self.g, self.k, self.limit = task, g, k, limit
        self.own = k if own is None else own
        self.dirs = dirs if dirs is not None else leaf_directions(task, g, rounding, seed)
        # direction 0 is also the first of the whole-leaf test (when nothing was drawn)
        self.f0, self.taylor = (taylor if taylor is not None
                                else taylor_test(self.dirs, 0, task.eps_f))
        self.noise: float | None = None   # f's rounding noise near θ, measured once per leaf
        self.examined: list[ComponentResults] = []
        self.found = self.tests = 0
        self.deferred: tuple[tuple[int, int], tuple[tuple[int, int], ...]] | None = None
        # the dirty path's probes: the last range that showed (the leaf's probe, `root`, to
        # start with), and the right half's value derived from its left half's
        self._last: PathValue | None = root
        self._sibling: PathValue | None = None
        # the leaf's verdict when no component FAILs: its own test (not run: all undecided)
        none, empty = np.zeros(0, np.int64), np.zeros(0)
        self.whole = DirectionalChecks(none, none, none, empty, empty, empty,
                                       np.zeros(0, np.int8), undecided=self.own)

    def _analytic_at(self, point):
        return self.task.analytic.leaves(self.dirs.at(point))[self.task.leaf_number].reshape(-1)

    def _directions(self, numbers, lo, hi, hole=None, until_fail=False) -> DirectionalChecks:
        task = self.task
        result = check_directions(self.dirs, self.f0, numbers, lo, hi, task.eps_f,
                                  task.rel_step, task.safety, self._analytic_at, self.noise,
                                  hole, until_fail, sharp=task.sharp)
        self.noise = result.noise if result.noise > 0 else self.noise
        return result

    def own_test(self) -> DirectionalChecks:
        """The leaf's own test of `own` directions on the whole leaf, until its first FAIL."""
        j, n = self.own, self.dirs.size
        self.whole = self._directions(self.dirs.fresh(j), np.zeros(j, np.int64), np.full(j, n),
                                      until_fail=True)
        return self.whole

    def _test_with(self, ranges, j):
        lo = np.repeat([r[0] for r in ranges], j)
        hi = np.repeat([r[1] for r in ranges], j)
        result = self._directions(self.dirs.fresh(j * len(ranges)), lo, hi)
        return [bool(np.any(result.status[i * j:(i + 1) * j] == v.FAIL))
                for i in range(len(ranges))]

    def _probe_range(self, r) -> bool:
        # Where to look next, not a verdict: a dirty range usually shows outside round-off in
        # its first direction (probability >= 1/2 each, 1 for a single wrong entry the range's
        # scale can see); a clean one that looks dirty only costs a detour (`group_testing`).
        # The halves of a range that showed take its direction: the left half is measured,
        # and the right half's value is the range's less the left's (`PathValue`), measured
        # only where that does not show: one probe a level where the search goes right.
        last, sibling = self._last, self._sibling
        self._sibling = value = None
        if last is not None:
            mid = (last.lo + last.hi) // 2
            if r == (last.lo, mid):
                value = self._measure(last.number, r)
                self._sibling = PathValue(mid, last.hi, last.number, last.diff - value.diff,
                                          last.tol + value.tol)
            elif r == (mid, last.hi):
                value = (sibling if sibling is not None and sibling.shows
                         else self._measure(last.number, r))
        if value is None:
            value = self._measure(int(self.dirs.fresh(1)[0]), r)
        if value.shows:
            self._last = value
        return value.shows

    def _measure(self, number: int, r) -> PathValue:
        return measure(self.task, self.dirs, self.f0, number, r[0], r[1])

    def _dirty(self, ranges):
        # The first directions, and the rest of the k only for ranges still looking clean: a
        # range is called clean only after k fresh directions all pass, as for the leaf.
        k, first = self.k, min(self.k, FIRST_DIRECTIONS)
        verdicts = self._test_with(ranges, first)
        rest = [r for r, bad in zip(ranges, verdicts) if not bad]
        if rest and k > first:
            more = iter(self._test_with(rest, k - first))
            verdicts = [bad or next(more) for bad in verdicts]
        return verdicts

    def _clear(self, r, hole) -> bool:
        # k fresh directions on r without the hole: the ranges left unverified on the way down
        k = self.k
        lo, hi = np.full(k, r[0]), np.full(k, r[1])
        holes = (np.full(k, hole[0]), np.full(k, hole[1]))
        # stops at its first FAIL: a range is cleared only when all k were decided
        return self._directions(self.dirs.fresh(k), lo, hi, holes, until_fail=True).n_fail == 0

    def _check_block(self, r) -> int:
        # A direction on one component j is ±sⱼ·eⱼ (sⱼ: max(1,|θⱼ|) rounded up to a power of
        # two): its check is full mode's per-component check (steps up to 2x full mode's, the
        # same error model and kink analysis), evaluated by the function already compiled for
        # this leaf; the values are divided back by uⱼ.
        idx = np.arange(r[0], r[1])
        res = self._directions(self.dirs.fresh(idx.size), idx, idx + 1)
        assert res.u_sum is not None  # check_directions always sets it
        self.examined.append(ComponentResults(idx, res.status, res.numerical / res.u_sum,
                                              res.tolerance / np.abs(res.u_sum),
                                              res.evaluations))
        return int(np.sum(res.status == v.FAIL))

    def search(self, defer: bool = False, resume: Sequence[tuple[int, int]] = ()) -> int:
        """Group testing for the leaf's wrong components (`group_testing.localise`); `defer`
        and `resume` as there. Returns the failing components found so far."""
        loc = localise(self.dirs.size, self._probe_range, self._dirty, self._clear,
                       self._check_block, block=max(1, BLOCK), limit=self.limit, defer=defer,
                       resume=resume, found=self.found)
        self.found, self.tests = loc.found, self.tests + loc.tests
        self.deferred = loc.deferred
        return self.found

    def clear_deferred(self, k: int | None = None) -> None:
        """The deferred search's clearing test on the leaf alone (`k` directions on the leaf
        without the hole, default the leaf's, and as many per test from there on), and the
        search resumed if it fails."""
        assert self.deferred is not None
        self.k = self.k if k is None else k
        self.tests += 1
        if self._clear((0, self.dirs.size), self.deferred[0]):
            self.deferred = None
        else:
            self.resume()

    def resume(self, k: int | None = None) -> int:
        """The deferred search after its clearing test failed (`search`), with `k` directions
        per test from there on (default: the leaf's)."""
        assert self.deferred is not None
        unverified, self.deferred = self.deferred[1], None
        self.k = self.k if k is None else k
        return self.search(resume=unverified)

    def decide(self, probed: bool = False, defer: bool = False) -> None:
        """The leaf's verdict. A leaf whose probe showed (`probed`) is searched first: a
        component FAIL confirmed by its own check fails the leaf, so its own test runs only
        where the search confirms none. Otherwise its own test first, and the search if it
        FAILs (`defer`: see `search`)."""
        if probed:
            if not self.search(defer):
                self.own_test()
        elif self.own_test().n_fail:
            self.search(defer)

    def report(self, directions: DirectionalChecks | None = None) -> LeafReport:
        """The leaf's report, with `directions` (default: its own test's) as its verdict."""
        return _report(self.task, self.g, self.examined,
                       self.whole if directions is None else directions, self.taylor)

    @property
    def evaluations(self) -> int:
        """Loss evaluations of this leaf's directions (its probe's included)."""
        return self.dirs.evaluations


def check_leaf_fast(task: LeafTask, g: Any, rounding: Any,
                    taylor: tuple[float, TaylorResult] | None, k: int, seed: int,
                    limit: int, dirs: Directions | None = None,
                    own: int | None = None) -> tuple[LeafReport, dict[str, int]]:
    """Fast-mode report of one leaf tested on its own (`LeafCheck`: its own test, and the
    search if it FAILs), and counts of the work done (`evaluations`: all of `dirs`', a
    probe's included)."""
    leaf = LeafCheck(task, g, rounding, taylor, k, seed, limit, dirs, own)
    leaf.decide()
    return leaf.report(), {"evaluations": leaf.evaluations, "tests": leaf.tests}


def _on_device(tasks: Sequence[LeafTask], gs: list[Any]) -> tuple[list[Any], list[Any]]:
    """The flat gradients as the programs take them (`gradient_input`: float32 at least, for
    the sums; a float32 gradient beside float64 params stays float32) and the bound
    on their rounding (as `directions.linear_bound`'s coefficients, from each leaf's norm,
    which `placement.finite_and_squares` reduces where the leaf lives in the program that
    checked the gradient finite: no program of its own). `gs` is emptied as it goes, so that
    one leaf at a time exists in both shapes."""
    wide = _gradient_dtype(tasks)
    _, squares = finite_and_squares(gs)
    # on the host: converting there compiles nothing
    roundings = [np.asarray(v.analytic_rounding_coefficients(t.eps_g, np.sqrt(q), t.eps_g_out,
                                                             norm=True), wide)
                 for t, q in zip(tasks, squares)]
    gs_device = []
    while gs:
        gs_device.append(gradient_input(flatten(jnp.asarray(gs.pop(0))), wide))
    return gs_device, roundings


def _joint(tasks: Sequence[LeafTask], gs_device: Sequence[Any], roundings: Sequence[Any],
           k: int, seed: int, first_number: int = JOINT_NUMBERS,
           holes: Sequence[tuple[int, int] | None] | None = None,
           tested: Sequence[bool] | None = None, taylor: bool = False):
    """The joint test of the leaves of `tasks` marked in `tested` (default all): k directions
    numbered from `first_number`, each leaf's without its hole (`joint_screen`); with
    `taylor`, every leaf's Taylor test too. Every call for these leaves runs one compiled
    program (the same leaves and row count, whatever is tested)."""
    first = tasks[0]
    return joint_screen(first.problem, [t.position for t in tasks],
                        [t.leaf_number for t in tasks], first.param_dynamic, first.arg_dynamic,
                        gs_device, roundings, k, seed, first.eps_f, first.rel_step,
                        first.safety, [t.path for t in tasks], first_number, holes, tested,
                        taylor, row_count(len(tasks), k))


def _corrected(tasks: Sequence[LeafTask], screen: JointScreen,
               checks: Sequence[LeafCheck | None], gs: Sequence[Any],
               seed: int) -> JointScreen:
    """The clearing test on the first joint test's points (`joint.corrected_screen`): every
    searched leaf's block, where its search confirmed a FAIL (its hole), has its gradient
    replaced by the numerical values measured there."""
    first = tasks[0]
    blocks = []
    for i, check in enumerate(checks):
        if check is None or check.deferred is None:
            continue
        lo, hi = check.deferred[0]
        for r in check.examined:
            at = (r.indices >= lo) & (r.indices < hi)
            idx = r.indices[at]
            blocks.append((i, idx, r.numerical[at], r.tolerance[at], entries(gs[i], idx)))
    return corrected_screen(screen, [t.position for t in tasks], first.param_dynamic, seed,
                            blocks)


# A joint direction's program holds every leaf's direction, its magnitudes and the point
# (measured: ~3x the params' bytes beside them).
JOINT_COPIES = 3


def _gradient_dtype(tasks: Sequence[LeafTask]) -> np.dtype:
    """The dtype fast mode holds the (flat) gradient in: at least float32."""
    return np.promote_types(tasks[0].leaf.dtype, np.float32)


def _fits_together(tasks: Sequence[LeafTask]) -> bool:
    """Whether the joint test's program fits the memory budget of the params' devices; if not
    (a model near the size of memory), each leaf is tested alone, one leaf's copies at a time."""
    itemsize = _gradient_dtype(tasks).itemsize
    total = sum(int(np.size(t.param_dynamic[t.position])) * itemsize for t in tasks)
    first = tasks[0]
    leaf = first.param_dynamic[first.position]
    devices = tuple(leaf.devices()) if isinstance(leaf, jax.Array) else (jax.devices()[0],)
    return JOINT_COPIES * total <= engine.total_memory_budget(devices)


def _together(tasks: Sequence[LeafTask]) -> bool:
    """Whether the leaves are first tested together (`joint`): decided before their gradient
    exists. The joint test passes only within the first step's round-off, which in native
    precision (`LeafTask.sharp`) is too coarse to cover a leaf: there every leaf takes its
    own test, whose weak passes are refined."""
    return (len(tasks) > 1
            and sum(int(np.size(t.param_dynamic[t.position])) for t in tasks) >= JOINT_MIN_SIZE
            and len({t.leaf.dtype for t in tasks}) == 1  # one dtype: one step for all
            and not tasks[0].sharp and _fits_together(tasks))


def check_all_fast(tasks: Sequence[LeafTask], k: int, seed: int,
                   limit: int) -> tuple[tuple[LeafReport, ...], dict[str, Any]]:
    together = _together(tasks)
    first = tasks[0]
    if together:   # its program compiles beside the gradient's
        compile_ahead(first.problem, [t.position for t in tasks], first.param_dynamic,
                      first.arg_dynamic, k + 1, first.eps_f, first.rel_step)
    # params near the size of their devices: each leaf's gradient is computed where its test
    # starts and dropped with its report, so that one leaf's is held at a time
    one_at_a_time = not together and len(tasks) > 1 and not _fits_together(tasks)
    gs: list[Any]
    roundings: list[Any]
    if one_at_a_time:
        gs, roundings = [None] * len(tasks), [None] * len(tasks)
    else:
        gs, roundings = _on_device(tasks, first.analytic.device_leaves())
    info: dict[str, Any] = {"directions": k}
    evaluations = tests = 0
    covered: tuple[int, ...] = ()
    failed_joint = False
    screen: JointScreen | None = None
    if together:
        if one_vector([t.position for t in tasks], first.param_dynamic):
            screen = _joint(tasks, gs, roundings, k + 1, seed, taylor=True)
            taylor = list(screen.taylor)
        else:   # large params: Taylor points that follow each leaf's change (one program)
            taylor = taylor_tests(first.problem, [t.position for t in tasks],
                                  [t.leaf_number for t in tasks], first.param_dynamic,
                                  first.arg_dynamic, gs, roundings, seed, first.eps_f)
            screen = _joint(tasks, gs, roundings, k + 1, seed)
        evaluations += (1 + LEVELS) * len(tasks) + screen.checks.evaluations
        covered = screen.covered if screen.passed else ()
        failed_joint = not screen.passed
        info["joint"] = {"passed": screen.passed, "directions": k + 1, "covered": [
            t.path for t in tasks if t.leaf_number in covered],
            # what one entry's error along the joint directions must exceed to be seen
            "tolerance": [float(x) for x in screen.checks.tolerance]}
    else:
        taylor = [None] * len(tasks)
    leaves: list[LeafReport | None] = [None] * len(tasks)
    dirs: list[Directions | None] = [None] * len(tasks)
    checks: list[LeafCheck | None] = [None] * len(tasks)
    # leaves left to the clearing test: those whose probe was within round-off, and those
    # whose search left its clearing test to it (`LeafCheck.deferred`: the leaf holed)
    pending: list[int] = []

    def leaf_check(i: int, own: int | None = None, root: PathValue | None = None) -> LeafCheck:
        checks[i] = check = LeafCheck(tasks[i], gs[i], roundings[i], taylor[i], k, seed, limit,
                                      dirs[i], own, root)
        return check

    for i, (task, leaf_taylor) in enumerate(zip(tasks, taylor)):
        g = rounding = None   # the previous leaf's let go before this one's is computed
        if one_at_a_time:   # the previous leaf's gradient and temporaries freed first
            release_freed_memory(task.param_dynamic)
            (gs[i],), (roundings[i],) = _on_device(
                [task], [first.analytic.device_leaf(task.leaf_number)])
            release_freed_memory(task.param_dynamic)
        g, rounding = gs[i], roundings[i]
        if task.leaf_number in covered:  # passed by the joint test
            # from `_together`, as `covered` is
            assert leaf_taylor is not None and screen is not None
            leaves[i] = _report(task, g, (), screen.checks, leaf_taylor[1])
        elif failed_joint:
            assert leaf_taylor is not None
            dirs[i] = leaf_dirs = leaf_directions(task, g, rounding, seed)
            root = probe(task, leaf_dirs, leaf_taylor[0])
            if root.shows:
                check = leaf_check(i, root=root)
                check.decide(probed=True, defer=True)
                if check.deferred is not None:
                    pending.append(i)
            else:
                pending.append(i)
        else:
            check = leaf_check(i)
            check.decide()
            if one_at_a_time:   # its report now, and its gradient dropped with its check
                leaves[i], checks[i], gs[i] = check.report(), None, None
                evaluations += check.evaluations
                tests += check.tests
                del check
    holes = {i: check.deferred[0] for i, check in enumerate(checks)
             if check is not None and check.deferred is not None}
    if len(pending) == 1:   # a clearing test of one leaf is its own test (or its search's)
        i = pending[0]
        check = checks[i]
        if check is None:
            leaf_check(i).own_test()
        else:
            check.clear_deferred(k + 1)   # the bound in the docstring
    elif pending:
        sub = [tasks[i] for i in pending]
        # every leaf pending: the first joint test, corrected, may clear them
        clearing = (_corrected(tasks, screen, checks, gs, seed)
                    if screen is not None and len(pending) == len(tasks) else None)
        reused = clearing is not None and clearing.passed
        if clearing is None or not clearing.passed:
            # all leaves, those pending tested: the first joint test's program
            clearing = _joint(tasks, gs, roundings, k + 1, seed, JOINT_NUMBERS + k + 1,
                              [holes.get(i) for i in range(len(tasks))],
                              [i in pending for i in range(len(tasks))])
        evaluations += clearing.checks.evaluations
        tests += len(holes)
        cleared = clearing.covered if clearing.passed else ()
        info["clearing"] = {"passed": clearing.passed, "directions": k + 1,
                            "leaves": [t.path for t in sub],
                            "covered": [t.path for t in sub if t.leaf_number in cleared],
                            "first_test": reused}
        if holes:
            info["clearing"]["holes"] = {tasks[i].path: list(h) for i, h in holes.items()}
        for i in pending:
            check = checks[i]
            if check is not None:   # a search's leaf: its holed range cleared, or searched on
                if tasks[i].leaf_number not in cleared:
                    check.resume(k + 1)   # the bound in the docstring
            elif tasks[i].leaf_number in cleared:
                leaf_taylor, leaf_dirs = taylor[i], dirs[i]
                assert leaf_taylor is not None and leaf_dirs is not None
                leaves[i] = _report(tasks[i], gs[i], (), clearing.checks, leaf_taylor[1])
                evaluations += leaf_dirs.evaluations   # its probe
            else:   # k + 1 directions after the clearing test: the bound in the docstring
                leaf_check(i, k + 1).own_test()
    for i, check in enumerate(checks):
        if check is not None:
            leaves[i] = check.report()
            evaluations += check.evaluations
            tests += check.tests
    reports = tuple(leaf for leaf in leaves if leaf is not None)
    assert len(reports) == len(tasks)
    return reports, {**info, "evaluations": evaluations, "localisation_tests": tests}
