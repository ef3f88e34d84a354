"""check refuses a loss or gradient whose values change between evaluations at one point."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcheck

X = jnp.linspace(-1.0, 1.0, 24).reshape(6, 4)
PARAMS = {"W": jnp.full((4, 3), 0.2), "b": jnp.zeros(3)}


def _loss_with_mask(p, x, mask):
    h = jnp.tanh(x @ p["W"] + p["b"]) * mask
    return jnp.mean(h ** 2)


def test_dropout_with_a_fixed_key_in_args_passes():
    def loss(p, x, key):
        mask = jax.random.bernoulli(key, 0.5, (x.shape[0], 3)) / 0.5
        return _loss_with_mask(p, x, mask)
    assert jaxcheck.check(loss, PARAMS, X, jax.random.key(0)).ok


def test_dropout_key_from_a_global_counter_raises():
    counter = itertools.count()

    def loss(p, x):
        key = jax.random.PRNGKey(next(counter))      # a new key at every trace
        mask = jax.random.bernoulli(key, 0.5, (x.shape[0], 3)) / 0.5
        return _loss_with_mask(p, x, mask)
    with pytest.raises(jaxcheck.NondeterminismError, match="fn: two") as e:
        jaxcheck.check(loss, PARAMS, X)
    assert "fixed PRNG key passed in args" in str(e.value)
    assert isinstance(e.value, ValueError)


def test_dropout_mask_from_np_random_raises():
    def loss(p, x):
        mask = np.random.default_rng().random((x.shape[0], 3)) < 0.5
        return _loss_with_mask(p, x, mask)
    with pytest.raises(jaxcheck.NondeterminismError, match="dropout"):
        jaxcheck.check(loss, PARAMS, X)


def _deterministic_loss(p, x):
    return _loss_with_mask(p, x, 1.0)


def _noisy_grad_fn(p, x):
    g = jax.grad(_deterministic_loss)(p, x)
    noise = np.random.default_rng().random(g["W"].shape)
    return {"W": g["W"] * (1 + 0.1 * noise), "b": g["b"]}


def test_nondeterministic_grad_fn_raises_naming_grad_fn():
    with pytest.raises(jaxcheck.NondeterminismError, match=r"grad_fn: two traces"):
        jaxcheck.check(_deterministic_loss, PARAMS, X, grad_fn=_noisy_grad_fn)


def test_single_leaf_loss_with_a_fresh_key_per_trace_raises():
    counter = itertools.count()

    def loss(w, x):
        mask = jax.random.bernoulli(jax.random.PRNGKey(next(counter)), 0.5, (x.shape[0], 3))
        return jnp.mean((jnp.tanh(x @ w) * mask) ** 2)
    with pytest.raises(jaxcheck.NondeterminismError, match="fn: "):
        jaxcheck.check(loss, PARAMS["W"], X)


def test_loss_near_zero_by_cancellation_is_not_called_nondeterministic():
    # Two leaves' compiled programs sum ~500 terms of size ~1 in different orders; the loss is
    # ~1e-14, so they differ by far more than √ε·|f| but only by rounding.
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal(500))
    params = {"a": a, "b": a[::-1] * (1 + 1e-9)}

    def loss(p):
        return (jnp.sum(jnp.tanh(p["a"]) ** 2) - jnp.sum(jnp.tanh(p["b"]) ** 2)
                + 0.3 * jnp.sum(p["a"] * p["b"][::-1]) - 0.3 * jnp.sum(p["a"] ** 2))

    with jax.enable_x64(True):
        report = jaxcheck.check(loss, jax.tree_util.tree_map(lambda x: x.astype(jnp.float64),
                                                             params))
    assert report.ok


@pytest.mark.parametrize("mode", ["full", "fast", "sample"])
@pytest.mark.parametrize("params", [PARAMS, PARAMS["W"]], ids=["two leaves", "one leaf"])
def test_every_mode_refuses_a_nondeterministic_fn(mode, params):
    counter = itertools.count()

    def loss(p, x):
        key = jax.random.PRNGKey(next(counter))      # a new dropout mask at every trace
        mask = jax.random.bernoulli(key, 0.5, (x.shape[0], 3)) / 0.5
        w, b = (p["W"], p["b"]) if isinstance(p, dict) else (p, 0.0)
        return jnp.mean((jnp.tanh(x @ w + b) * mask) ** 2)

    with pytest.raises(jaxcheck.NondeterminismError, match="fn: "):
        jaxcheck.check(loss, params, X, mode=mode)


@pytest.mark.parametrize("mode", ["full", "fast", "sample"])
def test_every_mode_refuses_a_nondeterministic_grad_fn(mode):
    with pytest.raises(jaxcheck.NondeterminismError, match=r"grad_fn: two traces"):
        jaxcheck.check(_deterministic_loss, PARAMS, X, grad_fn=_noisy_grad_fn, mode=mode)


@pytest.mark.parametrize("mode", ["full", "fast", "sample"])
def test_a_repeated_check_of_the_same_fn_traces_it_no_more(mode):
    # the second call reuses the programs compiled from the first call's traces (as jax.jit
    # does for a function it has seen), so it has nothing new to validate
    traces = []

    def loss(p, x):
        traces.append(1)
        return jnp.mean(jnp.tanh(x @ p["W"] + p["b"]) ** 2)
    first = jaxcheck.check(loss, PARAMS, X, mode=mode)
    traced = len(traces)
    again = jaxcheck.check(loss, PARAMS, X, mode=mode)
    assert first.ok and again.ok
    assert len(traces) == traced
    # other shapes are another function to JAX: traced and checked for determinism again
    jaxcheck.check(loss, PARAMS, X[:3], mode=mode)
    assert len(traces) >= traced + 2


@pytest.mark.parametrize("mode", ["full", "sample"])
def test_a_fn_refused_once_is_refused_again(mode):
    counter = itertools.count()

    def loss(p, x):
        key = jax.random.PRNGKey(next(counter))
        mask = jax.random.bernoulli(key, 0.5, (x.shape[0], 3)) / 0.5
        return _loss_with_mask(p, x, mask)
    for _ in range(2):
        with pytest.raises(jaxcheck.NondeterminismError):
            jaxcheck.check(loss, PARAMS, X, mode=mode)


def test_a_repeated_check_with_a_grad_fn_still_compares_its_traces():
    # grad_fn found deterministic once is not traced again; one that is not keeps failing
    counter = itertools.count()

    def loss(p, x):
        return jnp.mean(jnp.tanh(x @ p["W"] + p["b"]) ** 2)

    def noisy_grad(p, x):
        g = jax.grad(loss)(p, x)
        return jax.tree_util.tree_map(lambda a: a + 1e-3 * next(counter), g)
    for _ in range(2):
        with pytest.raises(jaxcheck.NondeterminismError, match="grad_fn"):
            jaxcheck.check(loss, PARAMS, X, grad_fn=noisy_grad)
