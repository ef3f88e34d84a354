"""The core verdicts of `jaxcheck.check`: right, per component, and localised."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from handwritten_models import mlp_problem, relu_kink_problem, with_hook
from jax.flatten_util import ravel_pytree

import jaxcheck


def test_correct_float32_mlp_backprop_passes():
    loss, backprop, params, args = mlp_problem()
    report = jaxcheck.check(loss, params, *args, grad_fn=backprop)
    assert report.ok
    assert report.n_fail == 0 and report.n_inconclusive == 0
    assert report.band == "excellent"


def test_classic_fixed_step_in_float32_would_fail_the_same_correct_model():
    # The reason for float64 evaluation: the seed recipe's eps=1e-7 in float32 is noise.
    loss, backprop, params, args = mlp_problem()
    flat, unravel = ravel_pytree(params)
    eps = 1e-7
    num = np.array([(loss(unravel(flat.at[i].add(eps)), *args)
                     - loss(unravel(flat.at[i].add(-eps)), *args)) / (2 * eps)
                    for i in range(flat.size)])
    ana = np.asarray(ravel_pytree(backprop(params, *args))[0])
    classic = np.linalg.norm(ana - num) / (np.linalg.norm(ana) + np.linalg.norm(num))
    assert classic > 1e-3
    assert jaxcheck.check(loss, params, *args, grad_fn=backprop).ok


def test_correct_float64_mlp_passes():
    with jax.enable_x64(True):
        loss, backprop, params, args = mlp_problem(dtype=jnp.float64)
        report = jaxcheck.check(loss, params, *args, grad_fn=backprop)
    assert report.ok
    assert all(leaf.dtype == "float64" for leaf in report.leaves)


def test_flags_sign_error_on_the_wrong_leaf_only():
    loss, backprop, params, args = mlp_problem()
    bad = with_hook(backprop, lambda g: {**g, "b0": -g["b0"]})
    report = jaxcheck.check(loss, params, *args, grad_fn=bad)
    assert not report.ok
    failing = {leaf.path for leaf in report.leaves if leaf.n_fail}
    assert failing == {"['b0']"}


def test_flags_transposed_square_weight():
    loss, backprop, params, args = mlp_problem(sizes=(4, 6, 6, 2))
    bad = with_hook(backprop, lambda g: {**g, "W1": g["W1"].T})
    report = jaxcheck.check(loss, params, *args, grad_fn=bad)
    assert {f.path for f in report.failures} == {"['W1']"}
    # Only off-diagonal entries differ; the diagonal of a transpose is unchanged.
    assert all(i != j for _, (i, j) in ((f.path, f.index) for f in report.failures))


def test_flags_missing_regulariser_term_with_small_lambda():
    loss, backprop, params, args = mlp_problem(lam=1e-5)
    bad = lambda p, x, y: backprop(p, x, y, l2_factor=0.0)
    report = jaxcheck.check(loss, params, *args, grad_fn=bad)
    assert not report.ok
    assert {f.path for f in report.failures} <= {"['W0']", "['W1']"}
    assert jaxcheck.check(loss, params, *args, grad_fn=backprop).ok


def test_finds_one_wrong_entry_among_thousands():
    loss, backprop, params, args = mlp_problem(sizes=(30, 64, 4), n=8)
    assert sum(p.size for p in params.values()) > 2000
    bad = with_hook(backprop, lambda g: {**g, "W0": g["W0"].at[17, 40].multiply(1.001)})
    report = jaxcheck.check(loss, params, *args, grad_fn=bad)
    assert [(f.path, f.index) for f in report.failures] == [("['W0']", (17, 40))]
    failure = report.failures[0]
    assert failure.analytic == pytest.approx(1.001 * failure.numerical, rel=1e-6)
    assert abs(failure.analytic - failure.numerical) > failure.tolerance


def test_exact_relu_kink_is_inconclusive_not_failed():
    loss, backprop, params, args = relu_kink_problem()
    z = args[0] @ params["W0"] + params["b0"]
    assert int(jnp.sum(z == 0)) > 10
    for convention in (0.0, 1.0, 0.5):  # every relu'(0) in [0, 1] is a valid subgradient
        report = jaxcheck.check(loss, params, *args,
                                grad_fn=lambda p, x, y, c=convention: backprop(p, x, y, c))
        assert report.ok, convention
        if convention != 0.5:  # 1/2 averages the one-sided slopes, as a central difference
            assert report.n_inconclusive > 0


def test_bug_at_a_kinked_component_still_fails():
    loss, backprop, params, args = relu_kink_problem()
    report = jaxcheck.check(loss, params, *args,
                            grad_fn=with_hook(backprop, lambda g: {**g, "W0": -g["W0"]}))
    assert not report.ok
    assert {f.path for f in report.failures} == {"['W0']"}


def test_abs_at_zero_is_inconclusive():
    w = jnp.array([0.0, 1.0, -2.0])
    report = jaxcheck.check(lambda w: jnp.sum(jnp.abs(w)), w)
    assert report.ok
    assert report.leaves[0].status.tolist() == [1, 0, 0]  # INCONCLUSIVE, PASS, PASS


def test_int_leaf_is_skipped_and_float0_or_int_zero_gradients_accepted():
    loss, backprop, params, args = mlp_problem()
    params = {**params, "step": jnp.asarray(7, jnp.int32)}

    def loss_with_step(p, x, y):
        return loss({k: v for k, v in p.items() if k != "step"}, x, y) * (1 + p["step"] / 100)

    def grad_int_zero(p, x, y):
        g = backprop({k: v for k, v in p.items() if k != "step"}, x, y)
        g = {k: v * (1 + p["step"] / 100) for k, v in g.items()}
        return {**g, "step": jnp.zeros((), jnp.int32)}

    report = jaxcheck.check(loss_with_step, params, *args, grad_fn=grad_int_zero)
    assert report.ok
    assert "['step']" not in {leaf.path for leaf in report.leaves}
    assert jaxcheck.check(loss_with_step, params, *args,
                          grad_fn=jax.grad(loss_with_step, allow_int=True)).ok


def test_prng_key_and_int_labels_in_args_are_not_cast():
    key = jax.random.key(0)
    labels = jnp.array([0, 2, 1])

    def loss(w, key, labels):
        assert labels.dtype == jnp.int32 and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        mask = jax.random.bernoulli(key, 0.5, w.shape)
        return jnp.sum(jnp.where(mask, w, 0.0) ** 2) + jnp.sum(w[labels])

    assert jaxcheck.check(loss, jnp.linspace(-1, 1, 6), key, labels).ok


def test_badly_scaled_leaves_pass_when_correct_and_fail_when_wrong():
    rng = np.random.default_rng(3)
    params = {"big": jnp.asarray(rng.standard_normal((4, 3)) * 1e3, jnp.float32),
              "small": jnp.asarray(rng.standard_normal(3) * 1e-3, jnp.float32)}
    x = jnp.asarray(rng.standard_normal((8, 4)) * 1e-3, jnp.float32)

    def loss(p, x):
        return jnp.sum((jnp.tanh(x @ p["big"]) @ p["small"] / 1e-3) ** 2)

    assert jaxcheck.check(loss, params, x).ok
    bad = with_hook(jax.grad(loss), lambda g: {**g, "big": g["big"].at[1, 2].multiply(1.01)})
    report = jaxcheck.check(loss, params, x, grad_fn=bad)
    assert [(f.path, f.index) for f in report.failures] == [("['big']", (1, 2))]


def test_loss_computed_in_float32_inside_is_not_a_false_alarm():
    rng = np.random.default_rng(1)
    w = jnp.asarray(rng.standard_normal((5, 4)), jnp.float32)
    x = jnp.asarray(rng.standard_normal((16, 5)), jnp.float32)

    def loss(w, x):  # casts down: float64 inputs are computed in float32 anyway
        return jnp.mean(jnp.tanh(x.astype(jnp.float32) @ w.astype(jnp.float32)) ** 2)

    report = jaxcheck.check(loss, w, x)
    assert report.ok
    assert report.info["eps_f"] == pytest.approx(float(jnp.finfo(jnp.float32).eps))
    bad = lambda w, x: jax.grad(loss)(w, x).at[2, 3].multiply(1.05)
    assert [f.index for f in jaxcheck.check(loss, w, x, grad_fn=bad).failures] == [(2, 3)]


@jax.custom_vjp
def _softplus(x):
    return jnp.logaddexp(x, 0.0)


def _softplus_fwd(x):
    return _softplus(x), x


def _softplus_bwd_right(x, g):
    return (g * jax.nn.sigmoid(x),)


_softplus.defvjp(_softplus_fwd, _softplus_bwd_right)


@jax.custom_vjp
def _softplus_wrong(x):
    return jnp.logaddexp(x, 0.0)


_softplus_wrong.defvjp(_softplus_fwd, lambda x, g: (g * jax.nn.sigmoid(x) ** 2,))


@pytest.mark.parametrize("activation, ok", [(_softplus, True), (_softplus_wrong, False)])
def test_custom_vjp_rule(activation, ok):
    rng = np.random.default_rng(2)
    params = {"W": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32)}
    x = jnp.asarray(rng.standard_normal((10, 3)), jnp.float32)

    def loss(p, x):
        return jnp.mean(activation(x @ p["W"]) ** 2)

    report = jaxcheck.check(loss, params, x)
    assert report.ok is ok
    if not ok:
        assert report.n_fail == 12  # every entry of W goes through the wrong rule


def test_params_are_not_mutated_and_x64_flag_restored():
    loss, backprop, params, args = mlp_problem()
    before = {k: np.array(v) for k, v in params.items()}
    flag = jax.config.jax_enable_x64
    jaxcheck.check(loss, params, *args, grad_fn=backprop)
    assert jax.config.jax_enable_x64 == flag
    assert all(params[k].dtype == jnp.float32 for k in params)
    assert all(np.array_equal(before[k], params[k]) for k in params)
