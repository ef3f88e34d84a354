"""Which mode examines the planned leaves: full (every component, by `Options.method`), fast
(random directions, then group testing) or sample (a random subset of components)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..evaluation import engine, progress
from ..inputs.options import Options
from ..plan.tasks import LeafTask
from .fast import check_all_fast
from .methods import check_with_method
from .results import LeafReport
from .sample import check_all_sample


def run_mode(tasks: Sequence[LeafTask],
             opts: Options) -> tuple[tuple[LeafReport, ...], dict[str, Any]]:
    """The per-leaf results of `opts.mode` on tasks after `plan.setup.shared_setup`, and
    what the mode adds to the report's `info` (e.g. its number of evaluations)."""
    if opts.mode == "fast":
        return check_all_fast(tasks, opts.directions, opts.seed, opts.localise)
    if opts.mode == "sample":
        return check_all_sample(tasks, opts.samples, opts.seed)
    # full mode: every component; its cost estimated first (a CostWarning, a progress bar)
    with progress.full_check(engine.jobs_for(tasks), opts.progress):
        return check_with_method(tasks, opts.method), {}
