"""Forward mode: JVP rules (jax.custom_jvp, user JVPs) checked as well as VJP rules."""
import jax
import jax.numpy as jnp
import jax.test_util
import pytest

import jaxcheck


@jax.custom_jvp
def scaled_sin(x, a):
    return a * jnp.sin(x)


@scaled_sin.defjvp
def _scaled_sin_jvp(primals, tangents):
    (x, a), (tx, _ta) = primals, tangents
    # bug: the tangent of `a` is dropped (the rule should add jnp.sin(x) * ta)
    return scaled_sin(x, a), a * jnp.cos(x) * tx


@jax.custom_vjp
def cube(x):
    return x ** 3


cube.defvjp(lambda x: (x ** 3, x), lambda x, g: (3 * x ** 2 * g,))


@jax.custom_vjp
def cube_wrong(x):
    return x ** 3


cube_wrong.defvjp(lambda x: (x ** 3, x), lambda x, g: (3 * x * g,))  # x² written as x


def test_wrong_custom_jvp_rule_is_caught_and_localised_in_forward_mode():
    p = {"x": jnp.array([0.3, 1.1]), "a": jnp.array([2.0, -0.5])}
    report = jaxcheck.check_jacobian(lambda p: scaled_sin(p["x"], p["a"]), p, ad="fwd")
    assert not report.ok
    assert {(f.ad, f.input_path) for f in report.failures} == {("fwd", "['a']")}
    # elementwise: only the diagonal entries d out[i] / d a[i] are wrong
    assert sorted((f.output_index, f.input_index) for f in report.failures) == [
        ((0,), (0,)), ((1,), (1,))]
    assert report.block("", "['x']", ad="fwd").n_fail == 0


def test_correct_custom_vjp_passes_in_reverse_mode_and_skips_forward_with_a_note():
    x = jnp.array([0.5, -1.5, 2.0])
    fn = lambda x: jnp.tanh(cube(x))
    with pytest.raises(TypeError, match="custom_vjp"):   # what check_grads does here
        jax.test_util.check_grads(fn, (x,), order=1)
    report = jaxcheck.check_jacobian(fn, x)              # ad="both" by default
    assert report.ok
    assert {b.ad for b in report.blocks} == {"rev"}
    assert len(report.notes) == 1 and "custom_vjp" in report.notes[0]
    assert "note: forward mode (fwd) skipped" in str(report)


def test_wrong_custom_vjp_is_caught_in_reverse_mode():
    x = jnp.array([0.5, -1.5, 2.0])
    report = jaxcheck.check_jacobian(lambda x: jnp.tanh(cube_wrong(x)), x)
    assert not report.ok
    assert sorted((f.output_index, f.input_index) for f in report.failures) == [
        ((0,), (0,)), ((1,), (1,)), ((2,), (2,))]


def test_user_jvp_checked_column_by_column():
    w = jnp.array([[0.4, -0.3], [0.2, 0.9]])
    f = lambda w, x: jnp.tanh(w @ x)
    x = jnp.array([1.0, 2.0])

    def jvp_fn(w, tw, x):
        y = jnp.tanh(w @ x)
        return (1 - y ** 2) * (tw @ x)

    def jvp_wrong(w, tw, x):                  # uses x[0] for both columns of row 1
        return jvp_fn(w, tw, x).at[1].set((1 - jnp.tanh(w @ x)[1] ** 2) * tw[1].sum() * x[0])

    assert jaxcheck.check_jacobian(f, w, x, jvp_fn=jvp_fn).ok
    report = jaxcheck.check_jacobian(f, w, x, jvp_fn=jvp_wrong)
    assert [(f.ad, f.output_index, f.input_index) for f in report.failures] == [
        ("jvp_fn", (1,), (1, 1))]


def test_forward_only_on_custom_vjp_checks_nothing_and_says_why():
    report = jaxcheck.check_jacobian(cube, jnp.array([1.0, 2.0]), ad="fwd")
    assert report.blocks == () and report.n_components == 0
    assert "custom_vjp" in report.notes[0]
