"""`check(fn, params, *args, reference=ref)`: a native-precision kernel against a float64
reference implementation of the same loss, and against its own finite differences."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..evaluation.reference_points import evaluate_side_by_side, float64_least_precise
from ..inputs.options import Options
from ..inputs.precision import machine_epsilon
from ..inputs.prepare import Inputs
from ..numerics.reference_comparison import compare
from ..report.reference import ReferenceReport
from ..report.report import Report


def native_options(opts: Options) -> Options:
    """The options of a kernel check: native precision (`"auto"` means it here: a kernel with
    a reference is one that may not run in float64); `"float64"` is refused."""
    if opts.precision == "float64":
        raise ValueError("precision: with reference=..., fn (the kernel) and grad_fn run in "
                         "their native precision and the reference in float64; expected "
                         "precision='native' or 'auto', got 'float64' (without a reference, "
                         "precision='float64' checks fn itself in float64)")
    return dataclasses.replace(opts, precision="native")


def check_against_reference(inputs: Inputs, opts: Options,
                            check_native: Callable[[Inputs, Options], Report]
                            ) -> ReferenceReport:
    """The kernel (`inputs.problem`, `inputs.grad_fn`, native precision) against
    `inputs.reference` in float64; `check_native` is the ordinary check of the kernel."""
    assert inputs.reference is not None
    p, a, grad_fn = inputs.params, inputs.args, inputs.grad_fn
    low = float64_least_precise(inputs.reference, p, a)
    if low is not None:
        raise ValueError(f"reference: expected a loss that computes in float64 when given "
                         f"float64 inputs (it is the float64 side of the comparison), but it "
                         f"computes values in {low} (a cast or a {low} constant inside); "
                         f"write the reference without casts, e.g. x.astype(params.dtype)")
    native = check_native(inputs, opts)
    eps_work = max(machine_epsilon(x.dtype) for x in p.checked_values)
    # a kernel that rounds through a lower precision inside is judged by that precision
    eps = max(eps_work, native.info.get("eps_g", eps_work), native.info.get("eps_f", eps_work))
    points = evaluate_side_by_side(inputs.problem, grad_fn, inputs.reference, p, a, eps_work,
                                   opts.seed)
    shapes = [tuple(x.shape) for x in p.checked_values]
    dtypes = [str(x.dtype) for x in p.checked_values]
    comparison = compare(points, p.paths, shapes, dtypes, native.leaves, eps, opts.safety)
    forward = comparison.forward
    info = {**native.info, "reference": True, "reference_eps": eps,
            "reference_jitter": points.jitter, "disagreement": comparison.disagreement,
            "renderer": "reference",
            "forward": {"kernel": forward.kernel, "reference": forward.reference,
                        "tolerance": forward.tolerance, "ok": forward.ok}}
    return ReferenceReport(comparison.leaves, info=info, max_failures=opts.max_failures,
                           forward=comparison.forward, native=native,
                           disagreement=comparison.disagreement)
