import jax.numpy as jnp

import jaxcheck


def test_sine_gradient_passes():
    assert jaxcheck.check(lambda w: jnp.sum(jnp.sin(w)), jnp.linspace(-1, 1, 5)).ok
