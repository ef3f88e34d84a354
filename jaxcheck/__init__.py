"""jaxcheck: gradient checking for JAX with per-component, localised, error-model verdicts.

The public API is exactly what this module re-exports.
"""
from ._check import assert_gradients as assert_gradients
from ._check import check as check
from ._complex_step import MethodFallbackWarning as MethodFallbackWarning
from ._determinism import NondeterminismError as NondeterminismError
from ._loss_terms import TermsReport as TermsReport
from ._options import Options as Options
from ._precision import PrecisionWarning as PrecisionWarning
from ._report import Failure as Failure
from ._report import LeafReport as LeafReport
from ._report import Report as Report
from ._report import band_of as band_of
from ._sweep import Sweep as Sweep
from ._sweep import sweep as sweep

__version__ = "0.1.0"

__all__ = [
    "Failure",
    "LeafReport",
    "MethodFallbackWarning",
    "NondeterminismError",
    "Options",
    "PrecisionWarning",
    "Report",
    "Sweep",
    "TermsReport",
    "assert_gradients",
    "band_of",
    "check",
    "sweep",
]
