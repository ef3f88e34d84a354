"""Which mode examines the planned leaves, and with which method: the one dispatch of
`Options.mode` (full: every component; fast: random directions, then group testing; sample: a
random subset of components) and of full mode's `Options.method` (central, forward, backward
or complex-step differences)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..evaluation import engine, progress
from ..inputs.options import Options
from ..inputs.traces import shapes_key
from ..plan.determinism import require_same_traces
from ..plan.tasks import LeafTask
from . import complex_step, one_sided
from . import differences as d
from .fast import check_all_fast
from .full import check_all
from .results import LeafReport
from .sample import check_all_sample
from .sharpest import check_all_sharpest

FIRST_PASS_EXPONENTS = {
    "central": d.CENTRAL_EXPONENT,                 # O(h²) stencil
    "complex": d.CENTRAL_EXPONENT,                 # its central cross-check
    "forward": one_sided.FIRST_PASS_EXPONENT,     # O(h) stencil
    "backward": one_sided.FIRST_PASS_EXPONENT,
}


def check_with_method(tasks: Sequence[LeafTask], method: str) -> tuple[LeafReport, ...]:
    """Per-leaf reports of full mode with `method` ("central", "forward", "backward",
    "complex"), on tasks after `plan.setup.shared_setup`."""
    if method == "central":
        # native precision: the sharpest valid estimate per leaf
        return check_all_sharpest(tasks) if tasks and tasks[0].sharp else check_all(tasks)
    if method in ("forward", "backward"):
        return one_sided.check_all(tasks, +1 if method == "forward" else -1)
    if method == "complex":
        return complex_step.check_all(tasks)
    raise ValueError(f"method: expected one of 'central', 'forward', 'backward', 'complex', "
                     f"got {method!r}")


def run_mode(tasks: Sequence[LeafTask],
             opts: Options) -> tuple[tuple[LeafReport, ...], dict[str, Any]]:
    """The per-leaf results of `opts.mode` on tasks after `plan.setup.shared_setup`, and
    what the mode adds to the report's `info` (e.g. its number of evaluations)."""
    if opts.mode == "fast":
        return check_all_fast(tasks, opts.directions, opts.seed, opts.localise)
    if opts.mode == "sample":
        return check_all_sample(tasks, opts.samples, opts.seed)
    # full mode: every component; its cost estimated first (a CostWarning, a progress bar
    # that says how long compiling took)
    before = engine.compile_seconds()
    # the gradient's program compiles in the background while the leaves' paths are chosen
    gradient = engine.beside(tasks[0].analytic.leaves, tasks[0].param_dynamic) if tasks \
        else None
    jobs = engine.jobs_for(tasks)   # the leaves' programs start compiling, in the background
    if len(tasks) > 1 and len(engine.programs_of(tasks)) == 1:
        # every leaf shares one program: no second one whose f(θ) the first leaf's is compared
        # with (`plan.determinism`), so fn is traced twice instead
        # (the engine's trace of fn, made to choose the leaves' paths, is the first of the two)
        first = tasks[0]
        example = (first.param_dynamic, first.arg_dynamic)
        require_same_traces("fn", first.problem.loss, example, first.eps_f,
                            first=engine.loss_jaxpr(first.problem, *example),
                            key=shapes_key(first.problem, *example, "fn"))
    if gradient is None and tasks:   # the gradient's program compiles beside them
        tasks[0].analytic.leaves()
    # else the leaves' first passes start as soon as their programs are compiled: the first
    # leaf's needs no gradient, which is still compiling beside them
    with progress.full_check(jobs, opts.progress,
                             compiling=lambda: engine.compile_seconds() - before):
        leaves = check_with_method(tasks, opts.method)
    references = {leaf.path: leaf.reference for leaf in leaves if leaf.reference is not None}
    return leaves, ({"references": references} if references else {})

