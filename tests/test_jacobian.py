"""check_jacobian: vector- and tree-valued functions, entry by entry, localised."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcheck


def layer(p, x):
    """A tree-valued function of a tree: an affine map, a squashed copy and a scalar."""
    y = p["W"] @ x + p["b"]
    return {"y": y, "t": jnp.tanh(y[:2]), "s": jnp.sum(p["W"] ** 2)}


PARAMS = {"W": jnp.array([[0.5, -0.2, 0.1], [0.3, 0.8, -0.4], [0.0, 0.6, 0.2]]),
          "b": jnp.array([0.1, -0.3, 0.2])}
X = jnp.array([1.0, -2.0, 0.5])


def test_correct_tree_valued_function_passes_in_both_modes():
    report = jaxcheck.check_jacobian(layer, PARAMS, X)
    assert report.ok, str(report)
    assert {b.ad for b in report.blocks} == {"rev", "fwd"}
    # 3 output leaves x 2 input leaves, per mode
    assert len(report.blocks) == 12
    assert report.block("['y']", "['W']", ad="rev").analytic.shape == (3, 9)
    assert report.n_components == 2 * (3 + 2 + 1) * (9 + 3)
    assert report.band == "excellent"


def test_wrong_vjp_localised_to_output_and_input_entries():
    def vjp_fn(p, ct, x):
        g = jax.vjp(lambda q: layer(q, x), p)[1](ct)[0]
        # bug: the transposed weight's gradient for the affine output only
        gy = jnp.outer(ct["y"], x)
        return {"W": g["W"] - gy + gy.T, "b": g["b"]}

    report = jaxcheck.check_jacobian(layer, PARAMS, X, vjp_fn=vjp_fn)
    assert not report.ok
    bad = {(f.output_path, f.input_path) for f in report.failures}
    assert bad == {("['y']", "['W']")}
    for f in report.failures:
        assert f.ad == "vjp_fn"
        i, (r, c) = f.output_index[0], f.input_index
        # the true dy_i/dW_rc is x_c if r == i; the bug moved it to x_r if c == i
        assert i in (r, c) and r != c
    assert report.block("['t']", "['W']").n_fail == 0


def test_wrong_full_jacobian_single_entry_localised():
    def jac_fn(p, x):
        jac = jax.jacrev(layer)(p, x)
        return {**jac, "y": {**jac["y"], "b": jac["y"]["b"].at[2, 1].add(1e-4)}}

    report = jaxcheck.check_jacobian(layer, PARAMS, X, jac_fn=jac_fn)
    assert [(f.output_path, f.output_index, f.input_path, f.input_index)
            for f in report.failures] == [("['y']", (2,), "['b']", (1,))]
    assert report.failures[0].location == "out['y'][2] wrt ['b'][1]"
    assert "out['y'][2] wrt ['b'][1]" in str(report)


def test_roundoff_scale_is_each_output_entrys_own_magnitude():
    # One output is ~1e6, the other ~1e-3: a 1% error in the small one's derivative is
    # 1e-5, far below the round-off of a difference of the large output (~1e-4 at h~1e-5).
    def f(x):
        return jnp.stack([1e6 * jnp.cosh(x[0] + x[1]), 1e-3 * jnp.sin(x[0])])

    def jvp_fn(x, t):
        big = 1e6 * jnp.sinh(x[0] + x[1]) * (t[0] + t[1])
        return jnp.stack([big, 1.01e-3 * jnp.cos(x[0]) * t[0]])

    x = jnp.array([0.4, 0.3])
    assert jaxcheck.check_jacobian(f, x).ok
    report = jaxcheck.check_jacobian(f, x, jvp_fn=jvp_fn)
    assert [(f.output_index, f.input_index) for f in report.failures] == [((1,), (0,))]


def test_integer_outputs_are_not_compared():
    report = jaxcheck.check_jacobian(
        lambda w: (jnp.sin(w), jnp.argmax(w)), jnp.array([0.1, 0.7, 0.3]))
    assert report.ok
    assert {b.output_path for b in report.blocks} == {"[0]"}


def test_untraceable_user_vjp_is_evaluated_one_row_at_a_time():
    def vjp_fn(w, ct):
        if float(jnp.sum(jnp.abs(ct))) > 0:    # Python control flow on a value
            return jnp.cos(w) * ct
        return jnp.zeros_like(w)

    report = jaxcheck.check_jacobian(jnp.sin, jnp.array([0.2, 0.9]), vjp_fn=vjp_fn)
    assert report.ok and report.n_components == 4


def test_scalar_loss_matches_check():
    loss = lambda w: jnp.sum(jnp.tanh(w) ** 3)
    report = jaxcheck.check_jacobian(loss, jnp.array([0.3, -0.6, 1.2]), ad="rev")
    assert report.ok and report.block("", "").analytic.shape == (1, 3)


def test_rejects_unknown_ad_mode():
    with pytest.raises(ValueError, match="ad: expected one of"):
        jaxcheck.check_jacobian(jnp.sin, jnp.ones(2), ad="forward")


def test_rejects_ad_together_with_a_user_function():
    with pytest.raises(ValueError, match="ad: selects JAX's own mode"):
        jaxcheck.check_jacobian(jnp.sin, jnp.ones(2), ad="rev", jvp_fn=lambda x, t: t)


def test_rejects_jac_fn_of_the_wrong_structure():
    with pytest.raises(ValueError, match="jac_fn returned shape"):
        jaxcheck.check_jacobian(jnp.sin, jnp.ones(2), jac_fn=lambda x: jnp.ones(2))


def test_rejects_primals_without_floats():
    with pytest.raises(ValueError, match="primals: expected a pytree with at least one"):
        jaxcheck.check_jacobian(lambda n: n * 1.0, np.arange(3))


def test_non_finite_output_names_the_component():
    with pytest.raises(ValueError, match=r"fn returned -inf at out\[1\] .* finite near primals"):
        jaxcheck.check_jacobian(lambda x: jnp.log(x), jnp.array([1.0, 0.0]))


def test_kink_in_an_output_entry_is_inconclusive_not_failed():
    report = jaxcheck.check_jacobian(jax.nn.relu, jnp.array([0.0, 0.5, -0.5]), ad="rev")
    assert report.ok
    block = report.block("", "")
    assert block.n_inconclusive == 1
    assert block.status.reshape(3, 3)[0, 0] == 1          # INCONCLUSIVE at relu(0)


@jax.custom_jvp
def relu_two_at_zero(x):
    return jnp.maximum(x, 0.0)


relu_two_at_zero.defjvp(lambda p, t: (
    relu_two_at_zero(p[0]),
    jnp.where(p[0] > 0, 1.0, jnp.where(p[0] == 0, 2.0, 0.0)) * t[0]))


def test_convention_outside_the_slopes_at_a_kink_is_confirmed_beside_it():
    # 2 is not between the one-sided slopes 0 and 1, but just beside the kink the rule gives
    # exactly those slopes: INCONCLUSIVE, as in the scalar check.
    x = jnp.array([0.0, 1.0, -1.0])
    report = jaxcheck.check_jacobian(lambda x: 3 * relu_two_at_zero(x), x, ad="rev")
    assert report.ok and report.n_inconclusive == 1
    assert report.block("", "").analytic[0, 0] == 6.0


def test_native_precision_upcasts_bfloat16_as_check_does():
    # the same working copies as `check`: bfloat16 primals are checked in float32, where a
    # correct Jacobian passes (on a bfloat16 grid the differences would be noise)
    x = jnp.linspace(0.5, 1.5, 4).astype(jnp.bfloat16)
    report = jaxcheck.check_jacobian(jnp.sin, x, precision="native")
    scalar = jaxcheck.check(lambda w: jnp.sum(jnp.sin(w)), x, precision="native")
    assert report.ok and scalar.ok, str(report)
    assert report.info["eps_f"] == scalar.info["eps_f"] == float(jnp.finfo(jnp.float32).eps)
