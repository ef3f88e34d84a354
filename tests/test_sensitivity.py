"""Where the loss barely depends on a parameter, its own steps keep a 1e-3 error visible."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jaxcheck


def _weakly_coupled():
    # inputs ~1e-5 and a loss ~1e3: ε·|f|/h is ~1e-2 of |gᵢ| at the usual first step
    rng = np.random.default_rng(5)
    p = {"w": jnp.asarray(rng.standard_normal((6, 4))), "v": jnp.asarray(rng.standard_normal(4))}
    x = jnp.asarray(rng.standard_normal((8, 6)) * 1e-5)
    loss = lambda p, x: 1e3 + jnp.sum(jnp.tanh(x @ p["w"] + 0.3) @ p["v"])
    return loss, p, x


def test_a_weakly_coupled_entry_gets_a_tolerance_well_below_its_gradient():
    loss, p, x = _weakly_coupled()
    with jax.enable_x64(True):
        report = jaxcheck.check(loss, p, x)
    w = next(leaf for leaf in report.leaves if leaf.path == "['w']")
    assert report.ok
    carrying = np.abs(w.analytic) >= np.median(np.abs(w.analytic))   # refined: the upper half
    assert np.max(w.tolerance[carrying] / np.abs(w.analytic[carrying])) < 1e-4  # SENSITIVITY


def test_a_relative_1e3_error_in_a_weakly_coupled_entry_is_found():
    loss, p, x = _weakly_coupled()

    def wrong(p, x):
        g = jax.grad(loss)(p, x)
        return {**g, "w": g["w"].at[2, 1].multiply(1.001)}

    with jax.enable_x64(True):
        report = jaxcheck.check(loss, p, x, grad_fn=wrong)
    assert [(f.path, f.index) for f in report.failures] == [("['w']", (2, 1))]
