"""`check(fn, params, *args, reference=ref)`: a float32 kernel against a float64 reference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcheck

W = jnp.asarray(np.linspace(-1.5, 1.2, 12).reshape(3, 4), jnp.float32)
X = jnp.asarray(np.linspace(-1.0, 1.0, 15).reshape(5, 3), jnp.float32)


def reference(w, x):
    return jnp.sum(jax.nn.softplus(x @ w) ** 2)


@jax.custom_vjp
def kernel_softplus(z):
    return jnp.logaddexp(z, 0.0)


def _forward(z):
    return kernel_softplus(z), z


def _backward(z, g):
    return (g * jax.nn.sigmoid(z),)


kernel_softplus.defvjp(_forward, _backward)


def kernel(w, x):
    return jnp.sum(kernel_softplus(x @ w) ** 2)


def test_a_correct_float32_kernel_agrees_with_its_float64_reference():
    report = jaxcheck.check(kernel, W, X, reference=reference)
    assert isinstance(report, jaxcheck.ReferenceReport)
    assert report.ok and report.disagreement == "none" and report.native.ok
    assert report.info["precision"] == "native"
    assert report.forward.value_ok and report.forward.ok
    # the comparison is float32 against float64: far tighter than any finite difference
    assert report.relative_difference < 1e-6 < report.native.relative_difference
    assert str(report).startswith("jaxcheck (reference): OK")


def test_one_wrong_entry_is_a_backward_mismatch_at_that_entry():
    def grad_fn(w, x):
        return jax.grad(kernel)(w, x).at[1, 2].multiply(1 + 1e-4)

    report = jaxcheck.check(kernel, W, X, grad_fn=grad_fn, reference=reference)
    assert report.disagreement == "backward" and not report.ok
    assert [f.index for f in report.failures] == [(1, 2)]
    assert report.forward.ok
    assert "backward mismatch" in str(report).splitlines()[0]


def test_a_forward_that_computes_another_function_is_a_forward_mismatch():
    def wrong_forward(w, x):      # its own jax.grad is consistent with it
        return jnp.sum(jax.nn.softplus(1.001 * (x @ w)) ** 2)

    report = jaxcheck.check(wrong_forward, W, X, reference=reference)
    assert report.disagreement == "forward"
    assert not report.forward.value_ok and report.native.ok


def test_a_forward_with_the_right_value_but_another_slope_shows_near_params():
    def tilted(w, x):             # equal to the reference at W, not beside it
        return reference(w, x) + 1e-2 * jnp.sum(w - W)

    report = jaxcheck.check(tilted, W, X, reference=reference)
    assert report.disagreement == "forward"
    assert report.forward.value_ok and not report.forward.ok


def test_a_wrong_forward_and_a_wrong_backward_are_both_reported():
    def wrong_forward(w, x):
        return jnp.sum(jax.nn.softplus(1.001 * (x @ w)) ** 2)

    def grad_fn(w, x):
        return jax.grad(wrong_forward)(w, x).at[0, 0].multiply(1.5)

    report = jaxcheck.check(wrong_forward, W, X, grad_fn=grad_fn, reference=reference)
    assert report.disagreement == "both"
    assert [f.index for f in report.native.failures] == [(0, 0)]


def test_a_kernel_rounding_through_bfloat16_is_judged_by_its_own_rounding():
    def bf16_kernel(w, x):
        z = (x.astype(jnp.bfloat16) @ w.astype(jnp.bfloat16)).astype(jnp.float32)
        return jnp.sum(jax.nn.softplus(z) ** 2)

    assert jaxcheck.check(bf16_kernel, W, X, reference=reference).ok

    def grad_fn(w, x):
        return jax.grad(bf16_kernel)(w, x).at[2, 3].multiply(1.2)

    report = jaxcheck.check(bf16_kernel, W, X, grad_fn=grad_fn, reference=reference)
    assert report.disagreement == "backward"
    assert (2, 3) in [f.index for f in report.failures]


def test_paths_argnums_and_pytrees_follow_check():
    params = {"w": W, "b": jnp.zeros(4, jnp.float32)}

    def loss(p, x):
        return kernel(p["w"], x) + jnp.sum(jnp.tanh(p["b"]))

    def ref(p, x):
        return reference(p["w"], x) + jnp.sum(jnp.tanh(p["b"]))

    def grad_fn(p, x):
        g = jax.grad(loss)(p, x)
        return {"w": g["w"], "b": g["b"].at[3].add(0.01)}

    report = jaxcheck.check(loss, params, X, grad_fn=grad_fn, reference=ref)
    assert [f.location for f in report.failures] == ["['b'][3]"]
    assert jaxcheck.check(loss, params, X, reference=ref, argnums=1).ok   # the inputs x


def test_reference_arguments_are_validated():
    with pytest.raises(TypeError, match="reference: expected a callable"):
        jaxcheck.check(kernel, W, X, reference="naive")
    with pytest.raises(ValueError, match="precision: with reference="):
        jaxcheck.check(kernel, W, X, reference=reference, precision="float64")
    with pytest.raises(ValueError, match="reference: not supported with named loss terms"):
        jaxcheck.check({"a": kernel}, W, X, reference=reference)


def test_assert_gradients_takes_a_reference():
    def grad_fn(w, x):
        return 2 * jax.grad(kernel)(w, x)

    with pytest.raises(AssertionError, match="backward mismatch"):
        jaxcheck.assert_gradients(kernel, W, X, grad_fn=grad_fn, reference=reference)
