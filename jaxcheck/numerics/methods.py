"""Which finite-difference method full mode uses: the dispatch of `Options.method`."""
from __future__ import annotations

from collections.abc import Sequence

from ..plan.tasks import LeafTask
from . import complex_step, one_sided
from . import differences as d
from .full import check_all
from .results import LeafReport

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
        return check_all(tasks)
    if method in ("forward", "backward"):
        return one_sided.check_all(tasks, +1 if method == "forward" else -1)
    if method == "complex":
        return complex_step.check_all(tasks)
    raise ValueError(f"method: expected one of 'central', 'forward', 'backward', 'complex', "
                     f"got {method!r}")
