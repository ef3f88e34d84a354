"""Sample mode draws its components with `sample_indices`: reproducible per (seed, leaf)."""
import jax.numpy as jnp
import numpy as np

import jaxcheck
from jaxcheck.numerics.sample import sample_indices


def test_the_components_a_report_shows_are_sample_indices_of_the_seed_and_leaf():
    rng = np.random.default_rng(3)
    params = {"W": jnp.asarray(rng.standard_normal((12, 10)) / 4, jnp.float32),
              "b": jnp.asarray(0.1 * rng.standard_normal(10), jnp.float32)}
    x = jnp.asarray(rng.standard_normal((6, 12)), jnp.float32)

    def loss(p, x):
        return jnp.mean(jnp.tanh(x @ p["W"] + p["b"]) ** 2)

    report = jaxcheck.check(loss, params, x, mode="sample", samples=5, seed=1)
    np.testing.assert_array_equal(report.leaf("['W']").indices,
                                  sample_indices(120, 5, seed=1, leaf_number=0))
    np.testing.assert_array_equal(report.leaf("['b']").indices,
                                  sample_indices(10, 5, seed=1, leaf_number=1))
    assert len(set(sample_indices(120, 5, seed=1, leaf_number=0))) == 5
