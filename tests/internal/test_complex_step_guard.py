"""The complex step's second guard, with the first (the jaxpr scan) switched off."""
import jax.numpy as jnp
import pytest

import jaxcheck
from jaxcheck.numerics import complex_step


def _l1_loss(p, x):
    return jnp.sum(jnp.tanh(x @ p["w"]) ** 2) + 0.3 * jnp.sum(jnp.abs(p["w"]))


def test_complex_step_disagreeing_with_central_differences_falls_back(monkeypatch):
    # Without the structural guard, abs still cannot slip through: the cross-check catches it.
    monkeypatch.setattr(complex_step, "NON_ANALYTIC", frozenset())
    p, x = {"w": jnp.array([0.5, -0.7, 0.2])}, jnp.linspace(-1, 1, 6).reshape(2, 3)
    with pytest.warns(jaxcheck.MethodFallbackWarning, match="disagrees with central"):
        report = jaxcheck.check(_l1_loss, p, x, method="complex")
    assert report.ok
