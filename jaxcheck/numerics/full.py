"""Full mode: every component of every checked leaf gets its own verdict.

Per leaf: one pass of central differences at the small step h₁ = ε^(1/3)·max(1,|θᵢ|)
(2 evaluations per component, plus the unperturbed point) screens out every component
already within round-off of the analytic value; the rest go through `escalation.decide`
(measured noise, Richardson levels at two scales, the kink analysis), as in every mode.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from .._errors import NonFiniteLossError
from ..evaluation import engine
from ..evaluation.product_outputs import AtTheta
from ..plan.determinism import require_same_loss, same_loss
from ..plan.tasks import LeafTask
from . import differences as d
from . import verdicts as v
from .components import ComponentLine, check_components
from .components import first_pass as components_first_pass
from .escalation import Level, measure_noise, weak_passes
from .results import CENTRAL, RIDDERS, LeafReport

_T = TypeVar("_T")

# A leaf's entry estimated through its uses' values sums the differences of many of them: its
# rounding is bounded by this many standard deviations of their independent roundings.
ROUNDING_SPREADS = 3.0


@dataclasses.dataclass(frozen=True, eq=False)
class FirstPass:
    """The loss at θ and at θ ± h₁ for every component of a leaf (flat, float64)."""

    f0: float
    level: Level
    line: ComponentLine     # the leaf's components, with the engine's batch for them

    @property
    def curvature(self) -> np.ndarray:
        """|∂ᵢ²f| from the second difference (its round-off included: an upper estimate)."""
        lv = self.level
        slopes = (lv.f_plus - self.f0) / lv.h_plus - (self.f0 - lv.f_minus) / lv.h_minus
        return np.abs(2.0 * slopes / (lv.h_plus + lv.h_minus))


def first_pass(task: LeafTask, f0: float | None = None) -> FirstPass:
    """Pass 1: θ itself and θ ± h₁ for every component (and the determinism check of f(θ));
    `f0`: f(θ) as the leaf's own program computed it already (for another leaf that shares
    it), which is then not evaluated again."""
    n = int(np.prod(task.leaf.shape, dtype=np.int64))
    line = ComponentLine(task, np.arange(n, dtype=np.int64))
    if f0 is not None:
        return FirstPass(f0, components_first_pass(line, with_f0=False)[1], line)
    f0, level = components_first_pass(line, with_f0=True)
    assert f0 is not None
    if task.f_reference is not None and not same_loss(f0, task.f_reference, task.eps_f):
        # rounding, or a different draw? the noise of f near θ tells
        noise = measure_noise(line, np.arange(n), f0, level.step)
        require_same_loss(f0, task.f_reference, task.eps_f, noise)
    return FirstPass(f0, level, line)


@dataclasses.dataclass(frozen=True, eq=False)
class ValuesPass:
    """Pass 1 through the values the leaf's uses reach (`evaluation.product_outputs`): f(θ),
    and per component of the leaf the estimate Σ Pᵀ(∂f/∂Y) with a bound on its rounding."""

    f0: float
    numerical: np.ndarray
    rounding: np.ndarray


def output_differences(task: LeafTask, at: AtTheta,
                       done: dict[Any, tuple[float, np.ndarray, np.ndarray]]
                       ) -> tuple[float, list[np.ndarray]] | None:
    """f(θ), and θ ± h₁ along every entry of each value the leaf's uses reach: the central
    differences of each value, then the bound on each one's rounding; None where the loss is
    not finite there (the leaf's own first pass then says where). `done`: the values already
    evaluated for another leaf (by problem), added to."""
    n, f0 = len(task.param_dynamic), None
    slopes, roundings = [], []
    for k, problem in enumerate(at.plan.problems):
        if problem not in done:
            out_task = dataclasses.replace(
                task, problem=problem, position=n, param_dynamic=at.dynamic(k),
                f_reference=task.f_reference if f0 is None else f0)
            try:
                first = first_pass(out_task)
            except NonFiniteLossError:
                return None
            lv = first.level
            f_scale = np.maximum(abs(first.f0),
                                 np.maximum(np.abs(lv.f_plus), np.abs(lv.f_minus)))
            done[problem] = (first.f0, d.central(lv.f_plus, lv.f_minus, lv.h_plus, lv.h_minus),
                             v.roundoff(task.eps_f, f_scale, lv.step))
        f0, slope, rounding = done[problem]
        slopes.append(slope)
        roundings.append(rounding)
    assert f0 is not None
    return f0, slopes + roundings


def _check_through_values(task: LeafTask, g: np.ndarray, first: ValuesPass) -> LeafReport:
    """PASS where the values' estimate is within its rounding of g, as the screen passes;
    every other component (and every pass that step 5 of the escalation would refine) is
    evaluated along its own line (`check_components`), as without this pass."""
    a = v.analytic_rounding(task.eps_g, g, task.eps_g_out)
    tolerance = task.safety * (first.rounding + a)
    screened = v.ComponentVerdicts(
        np.where(np.abs(first.numerical - g) <= tolerance, v.PASS, v.FAIL).astype(np.int8),
        first.numerical.copy(), tolerance)
    status = screened.status
    rest = np.union1d(np.flatnonzero(status != v.PASS), weak_passes(screened, g, a, task.safety))
    numerical = screened.numerical
    if rest.size:
        result = check_components(task, g, rest, first.f0)
        status[rest], numerical[rest], tolerance[rest] = (result.status, result.numerical,
                                                          result.tolerance)
    leaf = task.leaf
    return LeafReport(task.path, tuple(leaf.shape), task.dtype, g, numerical, tolerance, status)


def check_leaf(task: LeafTask, g_leaf: np.ndarray,
               first: FirstPass | ValuesPass | None = None) -> LeafReport:
    leaf = task.leaf
    g = g_leaf.reshape(-1)
    if g.size == 0:  # a 0-size leaf has no component to perturb: an empty verdict
        return LeafReport(task.path, tuple(leaf.shape), task.dtype, g, g, g,
                          np.zeros(0, np.int8))
    if isinstance(first, ValuesPass):
        return _check_through_values(task, g, first)
    first = first_pass(task) if first is None else first
    result = check_components(task, g, first.line.indices, first.f0, first.level, first.line)
    reference = None
    if task.sharp:   # native precision says which estimate decided the leaf
        refined = result.refined is not None and bool(np.any(result.refined))
        reference = RIDDERS if refined else CENTRAL
    return LeafReport(task.path, tuple(leaf.shape), task.dtype, g, result.numerical,
                      result.tolerance, result.status, reference=reference)


def first_passes(tasks: Sequence[LeafTask]) -> Iterator[tuple[LeafTask, Any, Any]]:
    """Each leaf with its analytic gradient and its first pass (None for an empty leaf:
    nothing to perturb). Each leaf's program computes f(θ) too: later leaves compare theirs
    with the first's. Every first pass comes before the gradient is asked for: where its
    program still compiles in the background, the leaves are evaluated meanwhile."""
    reference = None
    firsts: list[FirstPass | ValuesPass | None] = [None] * len(tasks)
    # f(θ) by the shared program that computed it: the same program's value for each of its
    # leaves (a point at θ alone would often take a batch of its own: 2n points fill theirs)
    at_theta: dict[Any, float] = {}
    # leaves whose first pass went through their uses' values: mapped back together
    through: dict[int, tuple[float, list[np.ndarray], AtTheta]] = {}
    values: dict[Any, tuple[float, np.ndarray, np.ndarray]] = {}   # shared by such leaves
    ats = engine.outputs_at(tasks)
    for k in _ready_first(tasks):
        task, at = tasks[k], ats[k]
        first: FirstPass | ValuesPass | None = None
        found = None if at is None else _after_gradient_errors(
            output_differences, dataclasses.replace(task, f_reference=reference), at, values)
        if found is not None and at is not None:
            through[k] = (*found, at)
            reference = found[0] if reference is None else reference
        elif task.leaf.size > 0:
            program = engine.shared_program(task.problem, task.position, task.param_dynamic,
                                            task.arg_dynamic)
            first = _after_gradient_errors(
                first_pass, dataclasses.replace(task, f_reference=reference),
                at_theta.get(program))
            reference = first.f0 if reference is None else reference
            if program is not None:
                at_theta.setdefault(program, first.f0)
        firsts[k] = first
    if through:
        mapped = engine.transposed([at for _, _, at in through.values()],
                                   [d for _, d, _ in through.values()])
        for k, (numerical, bound, variance) in zip(through, mapped):
            # the differences' rounding errors are independent from value to value: a leaf's
            # entry that sums many carries their spread, far below the sum of their bounds
            rounding = np.minimum(bound, ROUNDING_SPREADS * np.sqrt(variance))
            firsts[k] = ValuesPass(through[k][0], numerical, rounding)
    gradient = tasks[0].analytic.leaves() if tasks else []
    for task, first in zip(tasks, firsts):
        yield task, gradient[task.leaf_number], first


def _ready_first(tasks: Sequence[LeafTask]) -> Iterator[int]:
    """The tasks' indices, each time the first whose programs are compiled, if any, else the
    one whose programs started compiling first (`engine.readiness`): on a first call the
    leaves are evaluated while the others' programs compile, in the order those finish."""
    if not engine.compiling():   # a repeated call: every program is there
        yield from range(len(tasks))
        return
    kernels = [engine.first_pass_kernels(t) for t in tasks]
    left = list(range(len(tasks)))
    while left:
        k = min(left, key=lambda k: engine.readiness(kernels[k]))
        left.remove(k)
        yield k


def _after_gradient_errors(work: Callable[..., _T], task: LeafTask, *args: Any) -> _T:
    """`work(task, *args)` (a first pass), whose errors come after the gradient's own: a
    gradient that is not finite or fails to compute explains a failed evaluation (NaN beside
    a kink of sqrt), and is the error a user should see, as when the gradient came first."""
    try:
        return work(task, *args)
    except Exception:
        try:
            task.analytic.leaves()
        except Exception as error:
            raise error from None
        raise


def check_all(tasks: Sequence[LeafTask]) -> tuple[LeafReport, ...]:
    order = by_program(tasks)
    reports = [check_leaf(task, g, first)
               for task, g, first in first_passes([tasks[k] for k in order])]
    return tuple(reports[k] for k in np.argsort(order))


def by_program(tasks: Sequence[LeafTask]) -> list[int]:
    """The tasks' indices program by program (`engine.programs_of`, the order in which their
    compilations start): the leaves of the programs compiled first are evaluated while the
    others compile."""
    return [k for group in engine.programs_of(tasks).values() for k in group]
