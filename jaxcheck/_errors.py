"""Every exception and warning jaxcheck raises for its users, in one place.

Each is re-exported by `jaxcheck` (except `ForwardModeUnavailable`, which `check_jacobian`
catches and reports as a note). Errors about a bad argument are plain `TypeError` /
`ValueError` naming the argument; the classes here are the conditions a user may want to catch.
"""
from __future__ import annotations

from typing import Any


class NondeterminismError(ValueError):
    """`fn` or `grad_fn` returned different values when evaluated twice at the same point."""


class NonFiniteLossError(ValueError):
    """The loss is NaN or Inf at θ or at a perturbed point."""


class NonFiniteGradientError(ValueError):
    """The gradient under test has a NaN or Inf entry at params."""


class CostWarning(UserWarning):
    """A full check is estimated to take minutes; `mode="fast"` checks the same gradient in
    a few dozen evaluations per leaf."""


class MethodFallbackWarning(UserWarning):
    """The requested method could not be trusted for a leaf; central differences were used."""


class GradientCheckError(AssertionError):
    """Raised by the `gradcheck` fixture when some component FAILs; `.report` is the `Report`."""

    def __init__(self, report: Any) -> None:
        super().__init__(str(report))
        self.report = report


class ForwardModeUnavailable(Exception):
    """Forward-mode differentiation of the function is impossible (a `jax.custom_vjp`)."""
