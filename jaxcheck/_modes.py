"""Dispatch of the modes that examine only some components: fast and sample."""
from __future__ import annotations

from typing import Any, Sequence

from ._fast import check_all_fast
from ._tasks import LeafTask
from ._options import Options
from ._report import LeafReport
from ._sample import check_all_sample


def check_partial(tasks: Sequence[LeafTask],
                  opts: Options) -> tuple[tuple[LeafReport, ...], dict[str, Any]]:
    if opts.mode == "fast":
        return check_all_fast(tasks, opts.directions, opts.seed, opts.localise)
    return check_all_sample(tasks, opts.samples, opts.seed)
