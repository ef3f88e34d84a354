"""jaxcheck: gradient checking for JAX with per-component, localised, error-model verdicts.

The public API is exactly what this module re-exports.
"""
from ._check import assert_gradients as assert_gradients
from ._check import check as check
from ._complex_step import MethodFallbackWarning as MethodFallbackWarning
from ._determinism import NondeterminismError as NondeterminismError
from ._tasks import NonFiniteLossError as NonFiniteLossError
from ._health import Flag as Flag
from ._health import Health as Health
from ._health import LeafHealth as LeafHealth
from ._health import health as health
from ._jacobian import check_jacobian as check_jacobian
from ._jacobian_report import JacobianBlock as JacobianBlock
from ._jacobian_report import JacobianFailure as JacobianFailure
from ._jacobian_report import JacobianReport as JacobianReport
from ._loss_terms import TermsReport as TermsReport
from ._options import Options as Options
from ._progress import CostWarning as CostWarning
from ._report import Failure as Failure
from ._report import LeafReport as LeafReport
from ._report import Report as Report
from ._report import band_of as band_of
from ._sweep import Sweep as Sweep
from ._sweep import sweep as sweep
from ._training import CheckedStep as CheckedStep
from ._training import GradientMonitor as GradientMonitor
from ._validation import NonFiniteGradientError as NonFiniteGradientError

__version__ = "0.1.0"

__all__ = [
    "CheckedStep",
    "CostWarning",
    "Failure",
    "Flag",
    "GradientMonitor",
    "Health",
    "JacobianBlock",
    "JacobianFailure",
    "JacobianReport",
    "LeafHealth",
    "LeafReport",
    "MethodFallbackWarning",
    "NonFiniteGradientError",
    "NonFiniteLossError",
    "NondeterminismError",
    "Options",
    "Report",
    "Sweep",
    "TermsReport",
    "assert_gradients",
    "band_of",
    "check",
    "check_jacobian",
    "health",
    "sweep",
]
