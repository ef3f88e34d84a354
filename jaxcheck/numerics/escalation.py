"""Escalation: every step a derivative goes through before it may FAIL, whatever the mode.

A derivative here is the slope of the loss along a line through θ: along one component (full
and sample mode, the entries fast mode localises) or along a random direction (fast mode).
Every mode decides through `decide`, so no mode fails what another would pass:

1. **Screen.** One central difference at the first step h₁; PASS within round-off
   (`verdicts.screen`). Most derivatives stop here.
2. **Noise.** For what is left, the rounding noise of f near θ is measured (Moré & Wild: the
   6th difference of 7 closely spaced values): a loss whose terms cancel carries ε·Σ|terms| of
   rounding, far more than the ε·|f| the screen assumes.
3. **Richardson at the small scale.** Levels 4h₁, 2h₁, h₁ (h₁ reused), judged by the error
   model with the measured noise, the one-sided estimates and the kink analysis
   (`verdicts.judge`).
4. **Richardson at the extrapolation scale.** Levels h₂, h₂/2, h₂/4 with h₂ ≈ ε^(1/5) (steps
   a kink at the small scale does not reach, truncation an extrapolation removes), for what is
   still failing, unless the mismatch is gross with no sign of a kink.

At each scale an unresolved kink (the analytic value outside the one-sided slopes) is
confirmed beside θ: if the analytic derivative just right and left of θ matches the slopes
there, θ sits on a kink and the derivative is INCONCLUSIVE. A derivative FAILs only if it
fails at every scale tried.

5. **Steps from curvature and noise.** A PASS can be a weak statement: where the loss barely
   depends on a parameter (inputs scaled by 1e-2, a far upstream bias), ε·|f|/h is large next
   to |gᵢ| and the tolerance may exceed `SENSITIVITY`·|gᵢ|. Such a derivative (if |gᵢ| is at
   least the set's median, and its tolerance is not the gradient's own rounding) gets a step
   from its own measured derivatives and noise (`noise_balanced_steps`, after Moré & Wild,
   "Estimating derivatives of noisy simulations", ACM TOMS 2012), and Richardson levels at
   that step and at 4 times it. The tighter verdict of the two replaces the PASS only where
   both show a smooth f and agree with each other within it: a FAIL here too is confirmed at
   a second scale.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from . import differences as d
from . import ridders
from . import verdicts as v

# |analytic − numerical| beyond this many tolerances, with no jump in slope, is a bug at any
# scale: no need to try larger steps.
GROSS_EXCESS = 100.0
NOISE_SAMPLES = 4  # lines whose neighbourhood is sampled for the noise estimate
# A PASS with a tolerance above this fraction of |gᵢ| could hide a relative error of that size.
SENSITIVITY = 1e-4
# A change of the central difference between two probes this many times its noise (σ/h)
# measures f⁽³⁾ (Moré & Wild 2012 ask as much of a second difference, for f'').
CURVATURE_ABOVE_NOISE = 100.0
# Probes of f's derivatives at the extrapolation scale's largest step × 4ʲ, j < PROBES: up to
# ~0.76·max(1, |θᵢ|) in float64, where ε·|f|/h of a loss ~1e3 is ~1e-12.
PROBES = 6
# In native precision (`decide(..., sharp=True)`) a PASS is refined down to this fraction of
# |gᵢ|: a float32 check should see a whole gradient scaled by 1 + 1e-4.
SHARP_SENSITIVITY = 1e-6
# ...where the loss computes in float32 or better: a loss that rounds to bfloat16 or float16
# inside is a step function on their grid, below which Ridders' finer steps see only the steps.
SHARP_MAX_EPS = 2.0 ** -23


class Line(Protocol):
    """Loss evaluations along a set of lines through θ (rows 0..m−1)."""

    def losses(self, rows: np.ndarray, offsets: np.ndarray,
               strict: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """f at θ + offsets[k] along line rows[k] (float64), and the offsets actually taken
        (signed: a component's point is rounded to the working dtype). A non-finite value
        raises with `strict`, else it is returned."""
        ...

    def slopes(self, rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """The analytic derivative along line rows[k] at θ + offsets[k]."""
        ...


@dataclasses.dataclass(frozen=True)
class Level:
    """Loss values at θ ± h along some lines, with the exact steps taken."""

    f_plus: np.ndarray
    f_minus: np.ndarray
    h_plus: np.ndarray
    h_minus: np.ndarray

    def take(self, where: np.ndarray) -> Level:
        return Level(self.f_plus[where], self.f_minus[where], self.h_plus[where],
                     self.h_minus[where])

    @property
    def step(self) -> np.ndarray:
        return 0.5 * (self.h_plus + self.h_minus)


def central_levels(line: Line, rows: np.ndarray, steps: list[np.ndarray],
                   strict: bool = True) -> list[Level]:
    """θ ± h along `rows` for each array h in `steps`, in one call of `line.losses`."""
    m = rows.size
    offsets = np.concatenate([np.concatenate([h, -h]) for h in steps])
    f, taken = line.losses(np.tile(rows, 2 * len(steps)), offsets, strict)
    f, taken = f.reshape(len(steps), 2, m), taken.reshape(len(steps), 2, m)
    return [Level(f[k, 0], f[k, 1], taken[k, 0], -taken[k, 1]) for k in range(len(steps))]


def richardson_levels(line: Line, rows: np.ndarray, finest: np.ndarray, count: int,
                      strict: bool = True) -> list[Level]:
    """Levels finest·2^(count−1), ..., 2·finest, finest along `rows` (coarsest first)."""
    return central_levels(line, rows, [finest * 2.0 ** (count - 1 - k) for k in range(count)],
                          strict)


def _judge(levels: list[Level], g, a, f0: float, eps_f: float, safety: float, beside,
           noise: float):
    """`verdicts.judge` on `levels` (coarsest first), and the stacked values it used."""
    stacked = [np.stack([getattr(lv, name) for lv in levels])
               for name in ("f_plus", "f_minus", "h_plus", "h_minus")]
    f_plus, f_minus, h_plus, h_minus = stacked
    return (*v.judge(g, f0, f_plus, f_minus, h_plus, h_minus, eps_f, a, safety, beside, noise),
            stacked)


def measure_noise(line: Line, rows: np.ndarray, f0: float, step: np.ndarray) -> float:
    """Standard deviation of f's rounding noise near θ, from up to `NOISE_SAMPLES` of `rows`
    (`step`: their first steps); 0 if `rows` is empty."""
    if rows.size == 0:
        return 0.0
    pick = np.unique(np.linspace(0, rows.size - 1, NOISE_SAMPLES).astype(int))
    where, h = rows[pick], step[pick]
    k = np.arange(1, d.NOISE_ORDER + 1)
    offsets = (d.NOISE_STEP * h[:, None]) * k[None, :]
    out, _ = line.losses(np.repeat(where, d.NOISE_ORDER), offsets.reshape(-1))
    values = np.concatenate([np.full((where.size, 1), f0), out.reshape(where.size, -1)], 1)
    return d.noise_level(values)


@dataclasses.dataclass(frozen=True, eq=False)
class Decision:
    verdicts: v.ComponentVerdicts
    noise: float            # the noise measured (or given); 0 if none was needed
    # rows left undecided by `until_fail` (outside round-off at the first step, never
    # escalated): their entries in `verdicts` are no verdict, and must not be reported
    left: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    # rows whose verdict came from refined steps (step 5): Ridders' extrapolation when sharp
    refined: np.ndarray | None = None


def decide(line: Line, g: np.ndarray, a: np.ndarray, f0: float, first: Level,
           extrapolation_step: np.ndarray, eps_f: float, safety: float,
           noise: float | None = None, refine: bool = True,
           until_fail: bool = False, sharp: bool = False, ladders: int = 1) -> Decision:
    """Verdicts of the derivatives along every line of `line` (rows 0..m−1).

    **Arguments:**

    - `g`: the analytic derivatives; `a`: the bound on their rounding.
    - `f0`: f(θ); `first`: the first pass, θ ± h₁ along every line.
    - `extrapolation_step`: the finest step h₂/4 of the last scale, per line.
    - `noise`: f's rounding noise if already measured near θ (else measured here if needed).
    - `refine`: take weak passes through step 5 (fast mode's directions do not: their bound is
      stated against their tolerance, and they are meant to be cheap).
    - `until_fail`: escalate the rows outside round-off at the first step a few at a time
      (1, 2, 4, … in row order) and stop at the first group with a confirmed FAIL; the rows
      not reached are returned in `Decision.left`, undecided. The noise is measured over all
      of them first, as without `until_fail`, so every row escalated gets the verdict it
      would get without it, and no row is left unless one has FAILed. For a test that only
      needs to know whether some row FAILs (fast mode's directions).
    - `sharp`: native precision (with a loss computed in float32 or better,
      `SHARP_MAX_EPS`), where a weak PASS is refined by Ridders' extrapolation
      (`ridders`) down to `SHARP_SENSITIVITY`·|gᵢ| instead of by Richardson levels at two
      steps down to `SENSITIVITY`·|gᵢ|; `ladders`: Ridders ladders averaged per estimate
      (their rounding falls as 1/√ladders; for a few lines that carry a whole leaf).
    """
    sharp = sharp and eps_f <= SHARP_MAX_EPS
    screened = v.screen(g, first.f_plus, first.f_minus, first.h_plus, first.h_minus, f0,
                        eps_f, a, safety)
    status, numerical, tolerance = (screened.status.copy(), screened.numerical.copy(),
                                    screened.tolerance.copy())
    outside = np.flatnonzero(status == v.FAIL)
    beside = first.step
    if noise is None:
        noise = measure_noise(line, outside, f0, beside[outside])
    n_levels = d.RICHARDSON_LEVELS
    scales = (
        # the first step reused as the finest level
        lambda todo: richardson_levels(line, todo, 2.0 * beside[todo], n_levels - 1)
        + [first.take(todo)],
        lambda todo: richardson_levels(line, todo, extrapolation_step[todo], n_levels),
    )
    size = 1 if until_fail else max(1, outside.size)
    start = 0
    while start < outside.size:
        undecided = outside[start:start + size]
        start, size = start + size, 2 * size
        for evaluate_levels in scales:
            if undecided.size == 0:
                break
            judged, kinks, _ = _judge(evaluate_levels(undecided), g[undecided], a[undecided],
                                      f0, eps_f, safety, beside[undecided], noise)
            judged_status = judged.status.copy()
            judged_status[_confirmed_beside_kinks(line, undecided, kinks)] = v.INCONCLUSIVE
            status[undecided] = judged_status
            numerical[undecided], tolerance[undecided] = judged.numerical, judged.tolerance
            excess = np.abs(judged.numerical - g[undecided]) / judged.tolerance
            retry = (judged_status == v.FAIL) & ((excess < GROSS_EXCESS) | kinks.unresolved)
            undecided = undecided[retry]
        if until_fail and np.any(status[outside[:start]] == v.FAIL):
            break
    left = outside[start:]
    verdicts = v.ComponentVerdicts(status, numerical, tolerance)
    weak = (weak_passes(verdicts, g, a, safety, sharp) if refine
            else np.zeros(0, np.int64))
    sharpened = np.zeros(g.shape, bool)
    if weak.size:
        if not noise:
            noise = measure_noise(line, weak, f0, beside[weak])
        if sharp:
            sharpened[weak] = _refine_sharp(line, weak, verdicts, g, a, f0, extrapolation_step,
                                            eps_f, safety, noise, ladders)
        else:
            sharpened[weak] = _refine(line, weak, verdicts, g, a, f0, extrapolation_step,
                                      eps_f, safety, noise)
    return Decision(verdicts, float(noise or 0.0), left, sharpened)


def weak_passes(verdicts: v.ComponentVerdicts, g: np.ndarray, a: np.ndarray,
                 safety: float, sharp: bool = False) -> np.ndarray:
    """Rows that PASS with a tolerance above `SENSITIVITY`·|gᵢ| that a better step can lower
    (not the gradient's own rounding), among those that carry the set: |gᵢ| at or above the
    median (at most half the rows, so the cost stays bounded). `sharp`: above
    `SHARP_SENSITIVITY`·|gᵢ| plus twice the gradient's rounding (in float32 that rounding,
    ~ε·‖g‖, is itself near 1e-6·|gᵢ|)."""
    magnitude = np.abs(g)
    if magnitude.size == 0:
        return np.zeros(0, np.int64)
    if sharp:
        weak = verdicts.tolerance > SHARP_SENSITIVITY * magnitude + 2.0 * safety * a
    else:
        target = SENSITIVITY * magnitude
        weak = (verdicts.tolerance > target) & (safety * a < 0.5 * target)
    return np.flatnonzero((verdicts.status == v.PASS) & weak
                          & (magnitude >= np.median(magnitude)) & (magnitude > 0))


def noise_balanced_steps(line: Line, rows: np.ndarray, sigma: float,
                         base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The finest Richardson step for each of `rows`, from f's measured derivatives and noise.

    Central differences D(h) = f' + h²·f⁽³⁾/6 + O(σ/h) at the probe steps base·4ʲ (j <
    `PROBES`) measure |f⁽³⁾| from the first pair of probes whose difference stands
    `CURVATURE_ABOVE_NOISE` times above the noise σ/h (Moré & Wild 2012, who do so with
    second differences for one-sided steps); where none does, the largest pair bounds it.
    The step balances truncation and noise, h = (3σ/|f⁽³⁾|)^(1/3), and is kept where every
    probe up to 4h was finite (a loss defined only near θ stays so). NaN where none was.
    Also returns the largest step so kept, for Richardson levels, which can afford more."""
    probes = central_levels(line, rows, [base * 4.0**j for j in range(PROBES)], strict=False)
    slopes = np.stack([d.central(lv.f_plus, lv.f_minus, lv.h_plus, lv.h_minus)
                       for lv in probes])
    steps = np.stack([lv.step for lv in probes])
    finite = np.cumprod(np.isfinite(slopes), axis=0).astype(bool)
    change = np.abs(np.diff(slopes, axis=0))                     # (PROBES − 1, m)
    floor = CURVATURE_ABOVE_NOISE * sigma / steps[:-1]
    measurable = finite[1:] & (change >= floor)
    last_pair = finite[1:].sum(0) - 1
    j = np.maximum(np.where(measurable.any(0), np.argmax(measurable, 0), last_pair), 0)
    cols = np.arange(rows.size)
    with np.errstate(invalid="ignore"):
        third = (6.0 * np.maximum(change[j, cols], floor[j, cols])
                 / (steps[j + 1, cols] ** 2 - steps[j, cols] ** 2))
        h = (3.0 * sigma / third) ** (1.0 / 3.0)
    largest_finite = steps[np.maximum(finite.sum(0) - 1, 0), cols]
    h = np.clip(h, base / 4.0, largest_finite / 4.0)
    return np.where(finite[0] & np.isfinite(h), h, np.nan), largest_finite / 4.0


def _balanced_steps(line: Line, rows: np.ndarray, extrapolation_step: np.ndarray,
                    eps_f: float, f0: float, noise: float):
    """Which `rows` have a noise-balanced step, and those rows' steps and largest step (the
    start of both refinements)."""
    sigma = max(noise, eps_f * abs(f0))
    base = extrapolation_step[rows] * 2.0 ** (d.RICHARDSON_LEVELS - 1)
    h, h_max = noise_balanced_steps(line, rows, sigma, base)
    usable = np.isfinite(h)
    return usable, h[usable], h_max[usable]


def _refine(line: Line, rows: np.ndarray, verdicts: v.ComponentVerdicts, g, a, f0: float,
            extrapolation_step: np.ndarray, eps_f: float, safety: float,
            noise: float) -> np.ndarray:
    """Step 5 of the escalation, in place on `verdicts` for `rows` (weak passes).

    Richardson levels 4h, 2h, h at two scales: the noise-balanced step h of plain central
    differences, and 4 times it (extrapolation removes the h² term that h balances, so a
    larger step often wins; h/4 where 4h would leave the probed range). The tighter verdict
    replaces the weak PASS only where both scales are clean (finite, smooth f, no kink) and
    the other scale's estimate lies within its tolerance: a FAIL here is confirmed by a second
    scale, as a FAIL is everywhere else."""
    usable, h, h_max = _balanced_steps(line, rows, extrapolation_step, eps_f, f0, noise)
    taken = np.zeros(rows.size, bool)
    rows = rows[usable]
    if rows.size == 0:
        return taken
    other = np.where(4.0 * h <= h_max, 4.0 * h, h / 4.0)
    (a_status, a_num, a_tol, a_clean), (b_status, b_num, b_tol, b_clean) = (
        _judge_at(line, rows, step, g, a, f0, eps_f, safety, noise) for step in (h, other))
    tighter_a = a_tol <= b_tol
    tolerance = np.minimum(a_tol, b_tol)
    # the other scale's estimate must lie within the tighter one's tolerance: two honest
    # estimates agree that closely, and a kink straddled at one scale breaks it
    agree = (a_clean & b_clean & (np.abs(a_num - b_num) <= tolerance)
             & (tolerance < verdicts.tolerance[rows]))
    take = rows[agree]
    verdicts.status[take] = np.where(tighter_a, a_status, b_status)[agree]
    verdicts.numerical[take] = np.where(tighter_a, a_num, b_num)[agree]
    verdicts.tolerance[take] = tolerance[agree]
    taken[np.flatnonzero(usable)[agree]] = True
    return taken


def _refine_sharp(line: Line, rows: np.ndarray, verdicts: v.ComponentVerdicts, g, a,
                  f0: float, extrapolation_step: np.ndarray, eps_f: float, safety: float,
                  noise: float, ladders: int = 1) -> np.ndarray:
    """Step 5 in native precision, in place on `verdicts` for `rows` (weak passes); which
    rows it decided.

    Ridders' extrapolation (`ridders.extrapolate`) on two ladders of steps from f's measured
    derivatives and noise (`noise_balanced_steps`), the second offset by √2 from the first
    (no point shared). As in `_refine`, the tighter estimate replaces the weak PASS only
    where both ladders are finite and agree within the tighter tolerance, and a FAIL needs
    both ladders to fail: a FAIL is confirmed at a second set of steps. Both must also lie
    within the weak PASS's own tolerance of its estimate: large steps can straddle a kink
    (a ReLU's) that the small steps of the escalation did not, and tableau entries built
    across it can agree by chance; the small steps' estimate, whose error bound covers its
    truncation and kinks, vetoes them."""
    usable, h, h_max = _balanced_steps(line, rows, extrapolation_step, eps_f, f0, noise)
    taken = np.zeros(rows.size, bool)
    rows = rows[usable]
    if rows.size == 0:
        return taken
    top = np.minimum(ridders.LADDER_TOP * h, h_max)
    results = []
    # two estimates, each the mean of `ladders` ladders; the 2·ladders tops interleaved within
    # one factor RATIO (√2 apart for one ladder each), so no two ladders share a point
    tops = [top * ridders.RATIO ** (-k / (2.0 * ladders)) for k in range(2 * ladders)]
    for start in tops:
        steps = ridders.ladder(start)
        levels = central_levels(line, rows, steps, strict=False)
        f_plus, f_minus, h_plus, h_minus = (
            np.stack([getattr(lv, name) for lv in levels])
            for name in ("f_plus", "f_minus", "h_plus", "h_minus"))
        rounding = ridders.rounding_of_values(eps_f, f0, f_plus, f_minus, noise)
        result = ridders.extrapolate(f_plus, f_minus, h_plus, h_minus, rounding)
        kink = ridders.kink_at_theta(f0, f_plus, f_minus, h_plus, h_minus, rounding)
        results.append(dataclasses.replace(result, finite=result.finite & ~kink))
    (one, two), ga = (ridders.average(results[0::2]), ridders.average(results[1::2])), (g[rows],
                                                                                      a[rows])
    tol_one, tol_two = (safety * (r.error + ga[1]) for r in (one, two))
    tighter_one = tol_one <= tol_two
    value = np.where(tighter_one, one.value, two.value)
    tolerance = np.minimum(tol_one, tol_two)
    with np.errstate(invalid="ignore"):
        weak_value, weak_tolerance = verdicts.numerical[rows], verdicts.tolerance[rows]
        agree = (one.finite & two.finite & np.isfinite(tolerance)
                 & (np.abs(one.value - two.value) <= tolerance)
                 & (np.abs(one.value - weak_value) <= weak_tolerance)
                 & (np.abs(two.value - weak_value) <= weak_tolerance)
                 & (tolerance < weak_tolerance))
        fails = ((np.abs(one.value - ga[0]) > tol_one) & (np.abs(two.value - ga[0]) > tol_two))
        passes_tight = np.abs(value - ga[0]) <= tolerance
    # a tighter estimate that fails while the other passes: the other's PASS stands
    looser = ~fails & ~passes_tight
    value = np.where(looser, np.where(tighter_one, two.value, one.value), value)
    tolerance = np.where(looser, np.maximum(tol_one, tol_two), tolerance)
    agree &= tolerance < verdicts.tolerance[rows]
    take = rows[agree]
    verdicts.status[take] = np.where(fails, v.FAIL, v.PASS)[agree]
    verdicts.numerical[take] = value[agree]
    verdicts.tolerance[take] = tolerance[agree]
    taken[np.flatnonzero(usable)[agree]] = True
    return taken


def _judge_at(line: Line, rows: np.ndarray, h: np.ndarray, g, a, f0: float, eps_f: float,
              safety: float, noise: float):
    """Verdicts from Richardson levels 4h, 2h, h for `rows`, and whether each is clean:
    finite, no kink seen, f smooth within the steps (`_smooth_within_steps`)."""
    levels = richardson_levels(line, rows, h, d.RICHARDSON_LEVELS, strict=False)
    with np.errstate(invalid="ignore"):
        judged, kinks, (f_plus, f_minus, h_plus, h_minus) = _judge(
            levels, g[rows], a[rows], f0, eps_f, safety, h, noise)
        finite = np.all(np.isfinite(f_plus) & np.isfinite(f_minus), axis=0)
        clean = (finite & (judged.status != v.INCONCLUSIVE) & ~kinks.unresolved
                 & _smooth_within_steps(f_plus, f_minus, h_plus, h_minus, eps_f, f0, noise))
    return judged.status, judged.numerical, judged.tolerance, clean


def _confirmed_beside_kinks(line: Line, rows: np.ndarray, kinks: v.Kinks) -> np.ndarray:
    """Mask of unresolved kinks where the analytic slope beside θ matches the one-sided ones."""
    confirmed = np.zeros(kinks.unresolved.shape, bool)
    where = np.flatnonzero(kinks.unresolved)
    if where.size == 0:
        return confirmed
    step = kinks.step[where]
    slopes = line.slopes(np.concatenate([rows[where], rows[where]]), np.concatenate([step, -step]))
    sub = dataclasses.replace(kinks, right=kinks.right[where], left=kinks.left[where],
                              tolerance=kinks.tolerance[where])
    confirmed[where] = v.confirm_beside_kink(sub, slopes[:where.size], slopes[where.size:])
    return confirmed


def _smooth_within_steps(f_plus, f_minus, h_plus, h_minus, eps_f: float, f0: float,
                         noise: float) -> np.ndarray:
    """Whether f looks smooth enough within levels 4h, 2h, h to trust their spread.

    Either central differences change as a smooth f's do (by h²: the coarser change 4 times
    the finer, within a factor 2 and round-off, or not at all), or f' has no jump within the
    steps: the one-sided slopes extrapolated to θ from either side agree (a jump in f'' alone,
    elu's at 0, makes central differences change as h but leaves f' continuous). A kink
    straddled by the steps does neither, and the spread of the levels then understates the
    error of the estimates built on them."""
    D = d.central(f_plus, f_minus, h_plus, h_minus)
    h = 0.5 * (h_plus + h_minus)
    r = v.roundoff(eps_f, np.maximum(np.abs(f0), noise / eps_f), h)
    coarse, fine = np.abs(D[0] - D[1]), np.abs(D[1] - D[2])
    noise_level = 2.0 * (r[1] + r[2])
    quadratic = ((coarse >= 2.0 * fine - noise_level) & (coarse <= 8.0 * fine + noise_level)
                 | (coarse <= 2.0 * (r[0] + r[1])) & (fine <= noise_level))
    sides = []
    for S in (d.forward(f0, f_plus, h_plus), d.backward(f0, f_minus, h_minus)):
        fine_s, coarse_s = d.richardson(S[1], S[2], 1), d.richardson(S[0], S[1], 1)
        sides.append((fine_s, np.abs(fine_s - coarse_s)))
    (right, spread_r), (left, spread_l) = sides
    continuous = np.abs(right - left) <= spread_r + spread_l + 4.0 * r[2]
    return quadratic | continuous
