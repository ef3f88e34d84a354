"""jaxcheck: gradient checking for JAX with per-component, localised, error-model verdicts.

The public API is exactly what this module re-exports.
"""
from ._check import assert_gradients as assert_gradients
from ._check import check as check
from ._options import Options as Options
from ._precision import PrecisionWarning as PrecisionWarning
from ._progress import CostWarning as CostWarning
from ._report import Failure as Failure
from ._report import LeafReport as LeafReport
from ._report import Report as Report
from ._report import band_of as band_of

__version__ = "0.1.0"

__all__ = [
    "CostWarning",
    "Failure",
    "LeafReport",
    "Options",
    "PrecisionWarning",
    "Report",
    "assert_gradients",
    "band_of",
    "check",
]
