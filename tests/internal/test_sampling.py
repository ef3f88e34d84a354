"""Sample mode draws its components with `sample_indices`: reproducible per (seed, leaf)."""
import jax.numpy as jnp
import numpy as np

import jaxcheck
from jaxcheck.numerics.sample import sample_indices


def test_the_components_a_report_shows_are_sample_indices_of_the_seed_and_leaf():
    params = {"W": jnp.linspace(-1.0, 1.0, 120).reshape(12, 10), "b": jnp.ones(10)}

    def loss(p):
        return jnp.sum(jnp.sin(p["W"])) + jnp.sum(p["b"] ** 3)

    report = jaxcheck.check(loss, params, mode="sample", samples=5, seed=1)
    np.testing.assert_array_equal(report.leaf("['W']").indices,
                                  sample_indices(120, 5, seed=1, leaf_number=0))
    np.testing.assert_array_equal(report.leaf("['b']").indices,
                                  sample_indices(10, 5, seed=1, leaf_number=1))
    assert len(set(sample_indices(120, 5, seed=1, leaf_number=0))) == 5
