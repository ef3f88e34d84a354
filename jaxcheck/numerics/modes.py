"""Dispatch of the modes that examine only some components: fast and sample."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..inputs.options import Options
from ..plan.tasks import LeafTask
from .fast import check_all_fast
from .results import LeafReport
from .sample import check_all_sample


def check_partial(tasks: Sequence[LeafTask],
                  opts: Options) -> tuple[tuple[LeafReport, ...], dict[str, Any]]:
    if opts.mode == "fast":
        return check_all_fast(tasks, opts.directions, opts.seed, opts.localise)
    return check_all_sample(tasks, opts.samples, opts.seed)
