"""method= of check: one-sided differences and the complex step with its fallback."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcheck


def _mlp():
    r = np.random.default_rng(0)
    params = {"W0": r.standard_normal((4, 8)) / 2, "b0": r.standard_normal(8) * 0.1,
              "W1": r.standard_normal((8, 1)) / 3}
    x, y = r.standard_normal((16, 4)), r.standard_normal((16, 1))

    def loss(p, x, y):
        h = jnp.tanh(x @ p["W0"] + p["b0"])
        return 0.5 * jnp.mean((h @ p["W1"] - y) ** 2)

    f32 = lambda t: jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), t)
    return loss, f32(params), f32(x), f32(y)


def _scaled_entry(grad, path, index, factor):
    def wrong(p, *args):
        g = grad(p, *args)
        g[path] = g[path].at[index].multiply(factor)
        return g
    return wrong


def test_complex_step_in_float32_agrees_with_float64_central():
    loss, params, x, y = _mlp()
    complex32 = jaxcheck.check(loss, params, x, y, method="complex", precision="native")
    central64 = jaxcheck.check(loss, params, x, y)
    assert complex32.ok and central64.ok
    assert complex32.info["method"] == "complex"
    for a, b in zip(complex32.leaves, central64.leaves):
        scale = np.abs(b.numerical).max()
        # float32 complex step: ~1e-7 relative; float32 central differences reach ~1e-5 at best.
        assert np.abs(a.numerical - b.numerical).max() <= 3e-6 * scale


def test_complex_step_in_float32_catches_an_error_at_the_limit_of_central_differences():
    loss, params, x, y = _mlp()
    wrong = _scaled_entry(jax.grad(loss), "W0", (1, 2), 1 + 3e-4)
    report = jaxcheck.check(loss, params, x, y, grad_fn=wrong, method="complex",
                            precision="native")
    assert [f.location for f in report.failures] == ["['W0'][1, 2]"]
    # native precision's default takes the same reference where fn is complex-analytic
    default = jaxcheck.check(loss, params, x, y, grad_fn=wrong, precision="native")
    assert [f.location for f in default.failures] == ["['W0'][1, 2]"]
    assert set(default.info["references"].values()) == {"complex step"}
    assert default.failures[0].excess == pytest.approx(report.failures[0].excess)


def _l1_loss(p, x):
    return jnp.sum(jnp.tanh(x @ p["w"]) ** 2) + 0.3 * jnp.sum(jnp.abs(p["w"]))


def test_complex_step_through_abs_falls_back_to_central_with_a_warning():
    p, x = {"w": jnp.array([0.5, -0.7, 0.2])}, jnp.linspace(-1, 1, 6).reshape(2, 3)
    with pytest.warns(jaxcheck.MethodFallbackWarning, match=r"\['w'\].*abs"):
        report = jaxcheck.check(_l1_loss, p, x, method="complex")
    assert report.ok
    wrong = _scaled_entry(jax.grad(_l1_loss), "w", 1, 1.01)
    with pytest.warns(jaxcheck.MethodFallbackWarning):
        report = jaxcheck.check(_l1_loss, p, x, grad_fn=wrong, method="complex")
    assert [f.location for f in report.failures] == ["['w'][1]"]


def test_complex_step_falls_back_on_a_cast_to_real_inside_fn():
    loss = lambda w: jnp.sum(jnp.sin(w.astype(jnp.float32)) ** 2)
    with pytest.warns(jaxcheck.MethodFallbackWarning, match="cast to float32"):
        assert jaxcheck.check(loss, jnp.linspace(-1.0, 1.0, 4), method="complex").ok


def test_complex_step_leaves_an_analytic_leaf_on_the_complex_step():
    # Only the leaf fed through abs falls back; the other keeps the complex step.
    loss = lambda p: jnp.sum(jnp.abs(p["a"]) * jnp.exp(p["b"]))
    p = {"a": jnp.array([1.0, -2.0]), "b": jnp.array([0.1, 0.2])}
    with pytest.warns(jaxcheck.MethodFallbackWarning, match=r"\['a'\]") as record:
        assert jaxcheck.check(loss, p, method="complex").ok
    assert "['b']" not in str(record[0].message)


def test_complex_step_at_an_exact_optimum_passes():
    r = np.random.default_rng(1)
    X = r.standard_normal((64, 5))
    y = X @ r.standard_normal(5) + 0.3 * r.standard_normal(64)
    w = np.linalg.lstsq(X, y, rcond=None)[0]
    loss = lambda w, X, y: 0.5 * jnp.mean((X @ w - y) ** 2)
    assert jaxcheck.check(loss, jnp.asarray(w, jnp.float32), X, y, method="complex").ok


@pytest.mark.parametrize("method", ["forward", "backward"])
def test_one_sided_methods_pass_correct_and_localise_wrong_gradients(method):
    loss, params, x, y = _mlp()
    assert jaxcheck.check(loss, params, x, y, method=method).ok
    wrong = _scaled_entry(jax.grad(loss), "b0", 3, 1.001)
    report = jaxcheck.check(loss, params, x, y, grad_fn=wrong, method=method)
    assert [f.location for f in report.failures] == ["['b0'][3]"]


def test_forward_differences_work_at_a_domain_edge_where_central_cannot():
    loss = lambda t: jnp.sum(t * jnp.log(t))        # defined for t > 0 only
    theta = jnp.array([1e-7, 0.5, 2.0])
    assert jaxcheck.check(loss, theta, method="forward").ok
    wrong = lambda t: 1.0 + jnp.log(t) * jnp.array([1.0, 1.0, 1.01])
    report = jaxcheck.check(loss, theta, grad_fn=wrong, method="forward")
    assert [f.location for f in report.failures] == ["[2]"]
    with pytest.raises(ValueError, match="perturbed point"):
        jaxcheck.check(loss, theta)


@pytest.mark.parametrize("method, at_kink", [("forward", 1), ("backward", 0)])
def test_one_sided_methods_mark_a_relu_kink_inconclusive(method, at_kink):
    # relu'(0) = 0 is the left slope: backward differences confirm it, forward ones see the
    # right slope 1 and find the gradient right of 0 matching it: a kink, INCONCLUSIVE.
    loss = lambda w: jnp.sum(jax.nn.relu(w) * jnp.array([1.0, 2.0, 3.0]))
    report = jaxcheck.check(loss, jnp.array([0.0, 0.5, -0.5]), method=method)
    assert report.ok
    assert report.leaves[0].status.tolist() == [at_kink, 0, 0]   # 1: INCONCLUSIVE, 0: PASS


def test_one_sided_first_step_is_the_square_root_of_epsilon():
    report = jaxcheck.check(lambda w: jnp.sum(w ** 3), jnp.ones(2), method="forward")
    assert report.info["rel_step"] == pytest.approx(np.finfo(np.float64).eps ** 0.5)
