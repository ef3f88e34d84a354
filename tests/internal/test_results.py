"""The classic relative difference behind every report's figure."""
import jax.numpy as jnp
import pytest

from jaxcheck.numerics.results import relative_difference


def test_relative_difference_is_the_classic_formula():
    a, b = jnp.array([1.0, 2.0]), jnp.array([1.0, 2.5])
    expected = 0.5 / (float(jnp.linalg.norm(a)) + float(jnp.linalg.norm(b)))
    assert relative_difference(a, b) == pytest.approx(expected)
    assert relative_difference(jnp.zeros(2), jnp.zeros(2)) == 0.0
