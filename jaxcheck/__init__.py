"""jaxcheck: gradient checking for JAX with per-component, localised, error-model verdicts.

The public API is exactly what this module re-exports. The subpackages are the stages of the
pipeline (`inputs`, `plan`, `evaluation`, `numerics` and `rules`, `report`, `api`, `tools`; see
ARCHITECTURE.md): internal, and free to change between releases.
"""
from ._errors import CostWarning as CostWarning
from ._errors import GradientCheckError as GradientCheckError
from ._errors import MethodFallbackWarning as MethodFallbackWarning
from ._errors import NondeterminismError as NondeterminismError
from ._errors import NonFiniteGradientError as NonFiniteGradientError
from ._errors import NonFiniteLossError as NonFiniteLossError
from .api.check import assert_gradients as assert_gradients
from .api.check import check as check
from .api.hessian import check_hessian as check_hessian
from .api.jacobian import check_jacobian as check_jacobian
from .api.rules import check_rules as check_rules
from .api.third_order import check_third_order as check_third_order
from .inputs.options import Options as Options
from .numerics.results import Failure as Failure
from .numerics.results import LeafReport as LeafReport
from .report.bands import band_of as band_of
from .report.jacobian import JacobianBlock as JacobianBlock
from .report.jacobian import JacobianFailure as JacobianFailure
from .report.jacobian import JacobianReport as JacobianReport
from .report.reference import ReferenceReport as ReferenceReport
from .report.report import Report as Report
from .report.rules import RulesReport as RulesReport
from .report.terms import TermsReport as TermsReport
from .rules.results import RuleCheck as RuleCheck
from .rules.results import RuleFinding as RuleFinding
from .tools.health import Flag as Flag
from .tools.health import Health as Health
from .tools.health import LeafHealth as LeafHealth
from .tools.health import health as health
from .tools.sweep import Sweep as Sweep
from .tools.sweep import sweep as sweep
from .tools.training import CheckedStep as CheckedStep
from .tools.training import GradientMonitor as GradientMonitor

__version__ = "0.1.0"

__all__ = [
    "CheckedStep",
    "CostWarning",
    "Failure",
    "Flag",
    "GradientCheckError",
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
    "ReferenceReport",
    "Report",
    "RuleCheck",
    "RuleFinding",
    "RulesReport",
    "Sweep",
    "TermsReport",
    "assert_gradients",
    "band_of",
    "check",
    "check_hessian",
    "check_jacobian",
    "check_rules",
    "check_third_order",
    "health",
    "sweep",
]
