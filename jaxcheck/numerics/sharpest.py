"""Full mode in native precision: each leaf judged against the sharpest estimate valid there.

Where float64 is not available, central differences stop at ~1e-5 relative (float32), too
coarse to see a whole gradient scaled by 1 + 1e-4. Per leaf, in order of accuracy:

1. **The complex step** in the leaf's complex dtype (complex64 for float32), where `fn` is
   complex-analytic in the leaf: ~ε relative, no cancellation (`complex_step`). Valid only
   if the complexified jaxpr applies no non-analytic operation to the leaf's values and
   central differences accept every complex-step value as the gradient (its two guards);
   else
2. **central differences with Ridders' extrapolation** (`escalation.decide(..., sharp=True)`):
   every component through the one escalation, and each PASS weaker than
   `escalation.SHARP_SENSITIVITY`·|gᵢ| refined by Ridders' tableau on steps from its measured
   derivatives and noise (`ridders`), confirmed on a second ladder of steps; and the leaf's
   slope along its own gradient (`gradient_direction`), where a whole-gradient error adds up.
   Both only where the loss computes in float32 or better (`escalation.SHARP_MAX_EPS`): one
   that rounds to bfloat16 inside is a step function at Ridders' finer steps.

`LeafReport.reference` says which decided the leaf (`results.REFERENCES`): `"complex step"`,
`"Ridders extrapolation"` (some component refined), or `"central differences"`; and
`report.info["references"]` maps each leaf's path to it. Unlike `method="complex"`, a leaf
that cannot take the complex step is no warning: central differences are the expected
reference there.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..plan.tasks import LeafTask
from .complex_step import check_leaf_complex
from .escalation import SHARP_MAX_EPS
from .full import check_leaf, first_passes
from .gradient_direction import check_along_gradient
from .results import COMPLEX_STEP, LeafReport


def check_all_sharpest(tasks: Sequence[LeafTask]) -> tuple[LeafReport, ...]:
    reports = []
    for task, g, first in first_passes(tasks):
        if first is None:  # nothing to perturb: an empty verdict
            reports.append(check_leaf(task, g, None))
            continue
        report, fallback = check_leaf_complex(task, g, first)
        if fallback is None:
            report = dataclasses.replace(report, reference=COMPLEX_STEP)
        elif report.n_fail == 0 and g.size > 1 and task.eps_f <= SHARP_MAX_EPS:
            # real steps: a whole-gradient error adds up along the gradient itself
            report = dataclasses.replace(
                report, along_gradient=check_along_gradient(task, g, first.f0))
        reports.append(report)
    return tuple(reports)
