"""`check(fn, params, *args, reference=ref)`: a float32 kernel against a float64 reference."""
import functools

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


def test_a_forward_off_by_a_constant_is_reported_in_every_format():
    report = jaxcheck.check(lambda w, x: reference(w, x) + 1e-3, W, X, reference=reference)
    assert report.disagreement == "forward" and report.failures == ()
    line = "jaxcheck (reference): FAIL - forward mismatch: the loss values differ"
    assert str(report).splitlines()[0] == line
    assert "forward mismatch" in report._repr_html_()
    data = report.to_dict()
    assert not data["ok"] and data["info"]["disagreement"] == "forward"


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


def test_a_kink_where_kernel_and_reference_pick_different_subgradients_is_not_a_failure():
    def kernel_relu(w, x):        # relu'(0) = 1 here, 0 in jax.nn.relu
        z = x @ w
        return jnp.sum(jnp.where(z >= 0, z, 0.0) * jnp.arange(1.0, 5.0))

    def ref(w, x):
        return jnp.sum(jax.nn.relu(x @ w) * jnp.arange(1.0, 5.0))

    x = jnp.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], jnp.float32)
    w = W.at[0, 1].set(0.0)       # a pre-activation exactly at 0
    report = jaxcheck.check(kernel_relu, w, x, reference=ref)
    assert report.ok and report.n_inconclusive == 1


def test_paths_argnums_and_pytrees_follow_check():
    params = {"w": W, "b": jnp.zeros(4, jnp.float32)}

    def loss(p, x):
        return kernel(p["w"], x) + jnp.sum(jnp.tanh(p["b"]))

    def ref(p, x):
        return reference(p["w"], x) + jnp.sum(jnp.tanh(p["b"]))

    def grad_fn(p, x):            # argnums=(0, 1): the gradients for params and for x
        g, gx = jax.grad(loss, argnums=(0, 1))(p, x)
        return {"w": g["w"], "b": g["b"].at[3].add(0.01)}, gx

    report = jaxcheck.check(loss, params, X, grad_fn=grad_fn, reference=ref, argnums=(0, 1))
    assert [f.location for f in report.failures] == ["[0]['b'][3]"]
    assert report.disagreement == "backward"


def test_reference_arguments_are_validated():
    with pytest.raises(TypeError, match="reference: expected a callable"):
        jaxcheck.check(kernel, W, X, reference="naive")
    with pytest.raises(ValueError, match="precision: with reference="):
        jaxcheck.check(kernel, W, X, reference=reference, precision="float64")
    with pytest.raises(ValueError, match="reference: not supported with named loss terms"):
        jaxcheck.check({"a": kernel}, W, X, reference=reference)
    with pytest.raises(ValueError, match="reference: expected a loss that computes in float64"):
        jaxcheck.check(kernel, W, X, reference=lambda w, x: reference(w.astype(jnp.float32), x))


def test_assert_gradients_takes_a_reference():
    def grad_fn(w, x):
        return 2 * jax.grad(kernel)(w, x)

    with pytest.raises(AssertionError, match="backward mismatch"):
        jaxcheck.assert_gradients(kernel, W, X, grad_fn=grad_fn, reference=reference)


def _vector(rng, lo, hi, n=16):
    return jnp.asarray(rng.uniform(lo, hi, n), jnp.float32)


def _functions(rng):
    """float32 functions of jax.nn, jax.scipy.special and jnp.linalg, at points inside their
    domains: each is its own kernel (float32) and reference (float64)."""
    sp = jax.scipy.special
    a = rng.standard_normal((4, 4))
    spd = jnp.asarray(a @ a.T + 4 * np.eye(4), jnp.float32)
    square = jnp.asarray(rng.standard_normal((4, 4)) + 2 * np.eye(4), jnp.float32)
    v = functools.partial(_vector, rng)
    return {
        "softplus": (jax.nn.softplus, v(-3, 3)), "gelu": (jax.nn.gelu, v(-3, 3)),
        "log_softmax": (jax.nn.log_softmax, v(-3, 3)), "standardize": (jax.nn.standardize,
                                                                       v(-3, 3)),
        "logsumexp": (lambda x: jax.nn.logsumexp(x)[None], v(-3, 3)),
        "gammaln": (sp.gammaln, v(0.5, 5)), "erf_inv": (sp.erfinv, v(-0.9, 0.9)),
        "log_ndtr": (sp.log_ndtr, v(-3, 3)), "ndtri": (sp.ndtri, v(0.05, 0.95)),
        "logit": (sp.logit, v(0.05, 0.95)), "i0e": (sp.i0e, v(-3, 3)),
        "exp2": (jnp.exp2, v(-2, 2)), "log1p": (jnp.log1p, v(-0.5, 3)),
        "cbrt": (jnp.cbrt, v(0.2, 3)), "acos": (jnp.arccos, v(-0.9, 0.9)),
        "slogdet": (lambda m: jnp.linalg.slogdet(m)[1][None], square),
        "cholesky": (jnp.linalg.cholesky, spd),
        "svd": (lambda m: jnp.linalg.svd(m, compute_uv=False), square),
        "inv": (jnp.linalg.inv, square), "eigvalsh": (jnp.linalg.eigvalsh, spd),
        "rnn": (lambda w: jax.lax.scan(lambda h, x: (jnp.tanh(w @ h + x), h.sum()),
                                       jnp.full(4, 0.1, w.dtype), jnp.ones((5, 4), w.dtype))[1],
                0.3 * square),
    }


def _planted(loss):
    g = jax.grad(loss)
    return {"whole x (1+1e-4)": lambda x, c: g(x, c) * (1 + 1e-4),
            "one entry x (1+1e-3)": lambda x, c: g(x, c).reshape(-1).at[1].multiply(
                1 + 1e-3).reshape(x.shape),
            "VJP at x + 1e-3": lambda x, c: g(x + 1e-3, c)}


def _visible(loss, grad_fn, x, c):
    """Whether the planted error changes the gradient at all (it does not where the function
    is shift-invariant, like log_softmax, for the shifted VJP): in float64."""
    with jax.enable_x64(True):
        x64, c64 = x.astype(jnp.float64), c.astype(jnp.float64)
        right, wrong = jax.grad(loss)(x64, c64), grad_fn(x64, c64)
        return float(jnp.max(jnp.abs(wrong - right))) > 1e-9 * float(jnp.max(jnp.abs(right)))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_float32_functions_no_false_alarm_and_every_visible_planted_error_caught(seed):
    rng = np.random.default_rng(seed)
    false_alarms, missed, caught = [], [], 0
    for name, (f, x) in _functions(rng).items():
        c = jnp.asarray(rng.uniform(0.5, 1.5, 64), jnp.float32)

        def loss(x, c, f=f):
            y = f(x).reshape(-1)
            return jnp.sum(c[: y.size] * y)

        if not jaxcheck.check(loss, x, c, reference=loss, progress=False).ok:
            false_alarms.append(name)
        for kind, grad_fn in _planted(loss).items():
            if not _visible(loss, grad_fn, x, c):
                continue
            report = jaxcheck.check(loss, x, c, grad_fn=grad_fn, reference=loss, progress=False)
            if report.disagreement == "backward":
                caught += 1
            else:
                missed.append((name, kind, report.disagreement))
    assert false_alarms == [] and missed == []
    assert caught >= 55
