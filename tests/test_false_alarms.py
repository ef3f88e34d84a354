"""Correct gradients that once drew a FAIL or a spurious kink, and must not again.

Each case is a user report: a trivially correct model (gradient = `jax.grad`) where fast mode
failed a direction or a localised entry that full mode accepts, a kink reported in a smooth
function, or a loss whose `jax.jit(jax.grad)` JAX cannot linearise.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxcheck


def test_fast_mode_passes_a_squared_mean_whose_terms_cancel():
    # the loss's rounding is ε·Σ|terms|, far above ε·|f|: a direction failed by 2.3 tolerances
    # until fast mode measured the noise as full mode does
    rng = np.random.default_rng(0)
    p = {"W1": jnp.asarray(rng.standard_normal((64, 256)), jnp.float32) / 8,
         "W2": jnp.asarray(rng.standard_normal((256, 10)), jnp.float32) / 16}
    x = jnp.asarray(rng.standard_normal((32, 64)), jnp.float32)
    loss = lambda p, x: jnp.mean(jnp.tanh(x @ p["W1"]) @ p["W2"]) ** 2
    report = jaxcheck.check(loss, p, x, mode="fast")
    assert report.ok, str(report)
    assert jaxcheck.check(loss, p, x).ok


def test_fast_mode_localisation_accepts_what_full_mode_accepts():
    # a localised bias entry failed at |a-n|/tol = 1.1 where full mode passes all 1,728
    rng = np.random.default_rng(30)
    p = {"W1": jnp.asarray(rng.standard_normal((16, 64)).astype(np.float32) / 4),
         "b1": jnp.asarray(rng.standard_normal(64).astype(np.float32) * 0.1),
         "W2": jnp.asarray(rng.standard_normal((64, 10)).astype(np.float32) / 8)}
    x = jnp.asarray(rng.standard_normal((32, 16)).astype(np.float32))
    loss = lambda p, x: jnp.sum(jax.nn.sigmoid(x @ p["W1"] + p["b1"]) @ p["W2"])
    report = jaxcheck.check(loss, p, x, mode="fast")
    assert report.ok, str(report)
    full = jaxcheck.check(loss, p, x)
    assert full.ok and full.n_components == 1728


def test_fast_mode_passes_det_of_a_near_singular_float32_matrix_in_native_precision():
    # det is linear in each entry: no kink, and its float32 rounding cancels heavily
    rng = np.random.default_rng(11)
    a = rng.standard_normal((4, 4))
    a[3] = a[0] + a[1] + 1e-3 * rng.standard_normal(4)
    a = jnp.asarray(a, jnp.float32)
    for mode in ("fast", "full"):
        report = jaxcheck.check(jnp.linalg.det, a, precision="native", mode=mode)
        assert report.ok and report.n_inconclusive == 0, str(report)
        if mode == "fast":
            assert report.leaves[0].directions.n_inconclusive == 0


def _max_pool_loss(p, x):
    y = lax.conv_general_dilated(x, p["w"], (1, 1), "SAME")
    # an array init value: jax.grad works, jax.jit(jax.grad) fails to linearise
    y = lax.reduce_window(y, jnp.array(-jnp.inf), lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    return jnp.sum(y ** 2)


def _pool_problem():
    rng = np.random.default_rng(2)
    p = {"w": jnp.asarray(rng.standard_normal((4, 2, 3, 3)), jnp.float32) / 3}
    x = jnp.asarray(rng.standard_normal((2, 2, 6, 6)), jnp.float32)
    return p, x


def test_jit_of_grad_fails_for_this_max_pool():
    p, x = _pool_problem()
    jax.grad(_max_pool_loss)(p, x)
    with pytest.raises(ValueError, match="Linearization failed"):
        jax.jit(jax.grad(_max_pool_loss))(p, x)


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_max_pool_with_array_init_is_checked_and_a_wrong_entry_found(mode):
    p, x = _pool_problem()
    assert jaxcheck.check(_max_pool_loss, p, x, mode=mode).ok

    def wrong(p, x):  # a user backprop built on jax.grad, itself not jit-able here
        g = jax.grad(_max_pool_loss)(p, x)
        return {"w": g["w"].at[1, 0, 2, 1].multiply(1.01)}

    report = jaxcheck.check(_max_pool_loss, p, x, grad_fn=wrong, mode=mode)
    assert not report.ok
    assert [(f.path, f.index) for f in report.failures] == [("['w']", (1, 0, 2, 1))]


@pytest.mark.parametrize("precision", ["float64", "native"])
def test_fast_mode_sees_no_kink_in_a_smooth_convolution_layer(precision):
    rng = np.random.default_rng(3)
    p = {"w": jnp.asarray(rng.standard_normal((8, 3, 3, 3)) / 5, jnp.float32),
         "b": jnp.asarray(rng.standard_normal(8) * 0.1, jnp.float32)}
    x = jnp.asarray(rng.standard_normal((4, 3, 8, 8)), jnp.float32)

    def loss(p, x):
        y = lax.conv_general_dilated(x, p["w"], (1, 1), "SAME") + p["b"][None, :, None, None]
        return jnp.mean(jnp.tanh(y) ** 2)

    report = jaxcheck.check(loss, p, x, mode="fast", precision=precision)
    assert report.ok, str(report)
    assert all(leaf.directions.n_inconclusive == 0 for leaf in report.leaves)
