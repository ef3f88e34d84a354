"""check_hessian: the gradient itself checked against central differences of the gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcheck


@jax.custom_jvp
def softplus(x):
    return jnp.logaddexp(x, 0.0)


@softplus.defjvp
def _softplus_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    # First derivative right, but stop_gradient hides its own derivative: the Hessian is wrong.
    return softplus(x), jax.nn.sigmoid(jax.lax.stop_gradient(x)) * t


def loss(p, x):
    h = softplus(x @ p["a"])
    return jnp.sum(h * p["c"]) + jnp.sum(jnp.sin(p["c"]) ** 2)


PARAMS = {"a": jnp.array([[0.3, -0.2], [0.1, 0.4]]), "c": jnp.array([0.5, -1.0]),
          "step": np.int32(3)}
X = jnp.array([[1.0, 2.0], [0.5, -1.0], [0.2, 0.3]])


def test_correct_second_derivatives_pass():
    good = lambda p, x: jnp.sum(jax.nn.softplus(x @ p["a"]) * p["c"]) + jnp.sum(
        jnp.sin(p["c"]) ** 2)
    report = jaxcheck.check_hessian(good, PARAMS, X)
    assert isinstance(report, jaxcheck.JacobianReport)
    assert report.ok, str(report)
    # Hessian blocks over the checked leaves only (the int leaf is carried)
    assert {(b.output_path, b.input_path) for b in report.blocks} == {
        ("['a']", "['a']"), ("['a']", "['c']"), ("['c']", "['a']"), ("['c']", "['c']")}


def test_custom_jvp_with_wrong_second_derivative_is_caught_and_localised():
    assert jaxcheck.check(loss, PARAMS, X).ok          # the gradient itself is right
    report = jaxcheck.check_hessian(loss, PARAMS, X)
    assert not report.ok
    # d²/da² is wrong (softplus'' lost); the cross terms with c and d²/dc² are right
    assert {(f.output_path, f.input_path) for f in report.failures} == {("['a']", "['a']")}
    # softplus acts per column j of a: entries grad a[i, j] wrt a[k, j] only
    assert all(f.output_index[1] == f.input_index[1] for f in report.failures)
    assert report.failures[0].location.startswith("grad['a']")


def test_wrong_hand_written_hessian_vector_product_is_caught():
    w = jnp.array([0.3, -0.7, 1.2])
    f = lambda w: jnp.sum(jnp.cos(w) * w[0])

    def hvp(w, v):              # exact: H v with H = diag(-cos w)·w0 + e0 ⊗ (-sin w) + sym
        e0 = jnp.zeros_like(w).at[0].set(1.0)
        return (-jnp.cos(w) * w[0] * v - jnp.sin(w) * v[0]
                - e0 * jnp.dot(jnp.sin(w), v))

    def hvp_wrong(w, v):        # forgets the row term e0 ⊗ (-sin w)
        return -jnp.cos(w) * w[0] * v - jnp.sin(w) * v[0]

    assert jaxcheck.check_jacobian(jax.grad(f), w, jvp_fn=hvp).ok
    report = jaxcheck.check_jacobian(jax.grad(f), w, jvp_fn=hvp_wrong)
    assert sorted((f.output_index, f.input_index) for f in report.failures) == [
        ((0,), (0,)), ((0,), (1,)), ((0,), (2,))]


def test_check_returns_a_report_and_points_second_order_to_check_hessian():
    for fn in (loss, {"data": loss}):
        with pytest.raises(ValueError, match=r"order: .*jaxcheck.check_hessian"):
            jaxcheck.check(fn, PARAMS, X, order=2)
    with pytest.raises(TypeError, match=r"fn: check_hessian takes one loss"):
        jaxcheck.check_hessian({"data": loss}, PARAMS, X)


def test_options_object_is_accepted_and_keywords_override_it():
    opts = jaxcheck.Options(mode="sample", samples=3, seed=4)
    report = jaxcheck.check(loss, PARAMS, X, options=opts)
    assert report.info["mode"] == "sample"
    assert jaxcheck.check(loss, PARAMS, X, options=opts, mode="full").info["mode"] == "full"
    with pytest.raises(TypeError, match=r"options: expected a jaxcheck.Options"):
        jaxcheck.check(loss, PARAMS, X, options={"mode": "fast"})


def test_order_is_validated():
    with pytest.raises(ValueError, match=r"order: expected 1 .*, 2 .* or 3 .* got 4"):
        jaxcheck.check(lambda w: jnp.sum(w ** 2), jnp.ones(2), order=4)
    with pytest.raises(ValueError, match=r"order: expected"):
        jaxcheck.check(lambda w: jnp.sum(w ** 2), jnp.ones(2), order=2.0)


def test_check_jacobian_rejects_order_two():
    with pytest.raises(ValueError, match=r"order: check_jacobian checks first derivatives"):
        jaxcheck.check_jacobian(jnp.sin, jnp.ones(2), order=2)
