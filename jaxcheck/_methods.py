"""Which finite-difference method full mode uses: the dispatch of `Options.method`."""
from __future__ import annotations

from typing import Sequence

from . import _complex_step, _one_sided
from . import _differences as d
from ._determinism import require_deterministic
from ._full import check_all
from ._tasks import LeafTask
from ._low_precision import split_gradient_rounding
from ._report import LeafReport

FIRST_PASS_EXPONENTS = {
    "central": d.CENTRAL_EXPONENT,                 # O(h²) stencil
    "complex": d.CENTRAL_EXPONENT,                 # its central cross-check
    "forward": _one_sided.FIRST_PASS_EXPONENT,     # O(h) stencil
    "backward": _one_sided.FIRST_PASS_EXPONENT,
}


def prepare(tasks: Sequence[LeafTask]) -> list[LeafTask]:
    """Attach the gradient's rounding model and check determinism where that needs no leaf
    values (each method's `check_all` then compares every leaf's f(θ) with the first's)."""
    tasks = split_gradient_rounding(tasks)
    first = tasks[0]
    require_deterministic(first.analytic, len(tasks), first.eps_f,
                          max(first.eps_g, first.eps_g_out))
    return tasks


def check_with_method(tasks: Sequence[LeafTask], method: str) -> tuple[LeafReport, ...]:
    """Per-leaf reports of full mode with `method` ("central", "forward", "backward",
    "complex"), on tasks already `prepare`d."""
    if method == "central":
        return check_all(tasks)
    if method in ("forward", "backward"):
        return _one_sided.check_all(tasks, +1 if method == "forward" else -1)
    if method == "complex":
        return _complex_step.check_all(tasks)
    raise ValueError(f"method: expected one of 'central', 'forward', 'backward', 'complex', "
                     f"got {method!r}")
