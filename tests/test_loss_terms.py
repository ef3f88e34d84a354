"""check({name: term}, ...): a verdict per loss term and for their sum."""
import jax
import jax.numpy as jnp
import pytest

import jaxcheck

LAM = 1e-3
X = jnp.linspace(-1.0, 1.0, 24).reshape(8, 3)
Y = jnp.sin(jnp.arange(8.0))[:, None]
PARAMS = {"W": jnp.array([[0.3], [-0.2], [0.5]]), "b": jnp.array([0.1])}


def data(p, x, y):
    return 0.5 * jnp.mean((jnp.tanh(x @ p["W"] + p["b"]) - y) ** 2)


def l2(p, x, y):
    return 0.5 * LAM * jnp.sum(p["W"] ** 2)


def l2_grad_wrong(p, x, y):
    return {"W": LAM * p["W"].at[1, 0].multiply(1.05), "b": jnp.zeros(1)}   # one entry 5% off


def test_wrong_l2_derivative_is_reported_on_the_l2_term_only():
    report = jaxcheck.check({"data": data, "l2": l2}, PARAMS, X, Y,
                            grad_fn={"data": jax.grad(data), "l2": l2_grad_wrong})
    assert not report.ok
    assert report.failing_terms == ("l2",)
    assert report.terms["data"].ok
    assert [f.location for f in report.terms["l2"].failures] == ["['W'][1, 0]"]
    assert [f.location for f in report.failures] == ["['W'][1, 0]"]   # the sum
    assert "term 'l2': jaxcheck: FAIL" in str(report)


def test_correct_terms_pass_with_per_term_gradients_and_with_autodiff():
    grads = {"data": jax.grad(data), "l2": lambda p, x, y: {"W": LAM * p["W"],
                                                             "b": jnp.zeros(1)}}
    assert jaxcheck.check({"data": data, "l2": l2}, PARAMS, X, Y, grad_fn=grads).ok
    report = jaxcheck.check({"data": data, "l2": l2}, PARAMS, X, Y)
    assert report.ok and set(report.terms) == {"data", "l2"}


def test_single_gradient_function_is_checked_against_the_sum():
    wrong_sum = lambda p, x, y: jax.grad(data)(p, x, y)      # forgets the L2 term
    report = jaxcheck.check({"data": data, "l2": l2}, PARAMS, X, Y, grad_fn=wrong_sum)
    assert not report.ok and report.failing_terms == ()
    assert {f.path for f in report.failures} == {"['W']"}


def test_gradient_mapping_must_name_the_same_terms():
    with pytest.raises(ValueError, match=r"grad_fn: expected a gradient for each loss term"):
        jaxcheck.check({"data": data, "l2": l2}, PARAMS, X, Y,
                       grad_fn={"data": jax.grad(data)})
    with pytest.raises(TypeError, match="fn: expected a mapping of names"):
        jaxcheck.check({"data": 3}, PARAMS, X, Y)
