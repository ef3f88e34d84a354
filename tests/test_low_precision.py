"""bfloat16 / float16 leaves: checked on an upcast copy, with the gradient's own rounding."""
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcheck

BF16 = jnp.bfloat16


def _model(dtype):
    r = np.random.default_rng(0)
    params = {"W": jnp.asarray(r.standard_normal((4, 8)) / 2, dtype),
              "b": jnp.asarray(r.standard_normal(8) * 0.1, dtype)}
    x = jnp.asarray(r.standard_normal((16, 4)), dtype)
    y = jnp.asarray(r.standard_normal((16, 8)), dtype)
    return params, x, y


def loss(p, x, y):
    return 0.5 * jnp.mean((jnp.tanh(x @ p["W"] + p["b"]) - y) ** 2)


def backprop(p, x, y, bug=1.0):
    """Hand-written gradient, computed in float32 and returned in the params' dtype."""
    p32 = {k: v.astype(jnp.float32) for k, v in p.items()}
    h = jnp.tanh(x.astype(jnp.float32) @ p32["W"] + p32["b"])
    d = (h - y.astype(jnp.float32)) * (1 - h ** 2) / h.size
    g = {"W": (x.astype(jnp.float32).T @ d).at[1, 2].multiply(bug), "b": d.sum(0)}
    return {k: g[k].astype(BF16) for k in g}


@pytest.mark.parametrize("precision", ["float64", "native"])
def test_correct_bfloat16_gradient_passes(precision):
    params, x, y = _model(BF16)
    assert jaxcheck.check(loss, params, x, y, grad_fn=backprop, precision=precision).ok
    assert jaxcheck.check(loss, params, x, y, precision=precision).ok


@pytest.mark.parametrize("precision", ["float64", "native"])
def test_bfloat16_gradient_with_one_entry_4_percent_off_is_caught(precision):
    params, x, y = _model(BF16)
    wrong = lambda p, x, y: backprop(p, x, y, bug=1.04)
    report = jaxcheck.check(loss, params, x, y, grad_fn=wrong, precision=precision)
    assert [f.location for f in report.failures] == ["['W'][1, 2]"]
    assert report.leaf("['W']").dtype == "bfloat16"


def test_native_precision_upcasts_half_precision_leaves():
    params, x, y = _model(jnp.float16)
    report = jaxcheck.check(loss, params, x, y, precision="native")
    assert report.ok
    # Differences taken in float32 (steps ~ε₃₂^(1/3)), not on float16's 2⁻¹⁰ grid.
    assert report.info["eps_f"] == pytest.approx(np.finfo(np.float32).eps)
    assert report.leaf("['b']").relative_difference < 1e-4


def test_a_step_below_the_grid_is_never_a_zero_difference():
    report = jaxcheck.check(lambda w: jnp.sum(w ** 2), jnp.ones(3, BF16), precision="native",
                            eps=1e-12)
    leaf = report.leaves[0]
    assert np.all(np.isfinite(leaf.numerical)) and np.all(leaf.numerical != 0)
    assert report.ok


def bf16_kernel_loss(p, x, y):
    """A kernel that computes in bfloat16 inside (as a TPU or Pallas kernel does)."""
    h = jnp.tanh(x.astype(BF16) @ p["W"].astype(BF16) + p["b"].astype(BF16))
    return 0.5 * jnp.mean((h.astype(jnp.float32) - y.astype(jnp.float32)) ** 2)


def test_native_bfloat16_kernel_is_judged_by_bfloat16_rounding():
    # the leaves are checked on float32 copies; the kernel's own bfloat16 arithmetic is seen
    # in its jaxpr, and its loss, a step function on bfloat16's grid, gets no refined steps
    # below that grid (they would see only the steps: a false alarm on every component)
    params, x, y = _model(BF16)
    report = jaxcheck.check(bf16_kernel_loss, params, x, y, precision="native")
    assert report.info["eps_f"] == pytest.approx(float(jnp.finfo(BF16).eps))
    assert report.ok
