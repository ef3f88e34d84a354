"""What `check` promises besides its verdict: the user's inputs are never written to, JAX's
global configuration is left as it was (also when the check raises), two checks can run in
two threads at once, and a call inside `jax.jit` raises a clear error."""
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcheck
from jaxcheck import NonFiniteLossError


def mlp_loss(p, x, y):
    h = jnp.tanh(x @ p["W"] + p["b"])
    return jnp.mean((h @ p["v"] - y) ** 2) + 0.0 * jnp.sum(p["steps"])


def mlp_grad(p, x, y):
    return jax.grad(lambda q: mlp_loss({**q, "steps": p["steps"]}, x, y))(
        {k: p[k] for k in ("W", "b", "v")}) | {"steps": jnp.zeros_like(p["steps"])}


def numpy_problem():
    rng = np.random.default_rng(0)
    params = {"W": rng.normal(size=(3, 4)).astype(np.float32),
              "b": rng.normal(size=4),                      # float64
              "v": rng.normal(size=4).astype(np.float32),
              "steps": np.arange(2)}                         # int, carried
    x, y = rng.normal(size=(5, 3)), rng.normal(size=5).astype(np.float32)
    return params, (x, y)


def read_only(tree):
    for leaf in jax.tree_util.tree_leaves(tree):
        leaf.setflags(write=False)  # any write into it raises ValueError
    return tree


def snapshot(tree):
    return [(np.array(leaf, copy=True), leaf.dtype) for leaf in jax.tree_util.tree_leaves(tree)]


def assert_unchanged(tree, before):
    leaves = jax.tree_util.tree_leaves(tree)
    assert len(leaves) == len(before)
    for leaf, (value, dtype) in zip(leaves, before):
        assert isinstance(leaf, np.ndarray) and leaf.dtype == dtype
        np.testing.assert_array_equal(leaf, value)


# never mutated ------------------------------------------------------------------------------

def test_numpy_params_and_args_are_never_written_to():
    params, args = numpy_problem()
    read_only((params, args))
    before = snapshot((params, args))
    leaves = dict(params)
    jaxcheck.check(mlp_loss, params, *args)                     # autodiff gradient
    jaxcheck.check(mlp_loss, params, *args, grad_fn=mlp_grad)  # a grad_fn of the user's
    jaxcheck.check(mlp_loss, params, *args, precision="native")
    assert_unchanged((params, args), before)
    assert all(params[k] is leaves[k] for k in leaves) and params.keys() == leaves.keys()


def test_writable_numpy_params_are_not_written_to_even_when_the_check_fails():
    params, args = numpy_problem()
    before = snapshot((params, args))
    wrong = lambda p, x, y: {**mlp_grad(p, x, y), "b": -mlp_grad(p, x, y)["b"]}
    assert not jaxcheck.check(mlp_loss, params, *args, grad_fn=wrong).ok
    assert_unchanged((params, args), before)


def test_params_are_not_written_to_when_the_check_raises():
    params, args = numpy_problem()
    params["b"][0] = np.nan
    read_only((params, args))
    before = snapshot((params, args))
    with pytest.raises(ValueError, match="finite"):
        jaxcheck.check(mlp_loss, params, *args)
    assert_unchanged((params, args), before)


def test_flax_nnx_module_is_not_mutated():
    nnx = pytest.importorskip("flax.nnx")

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(3, 2, rngs=rngs)
            self.seen = nnx.BatchStat(jnp.zeros(2))
            self.calls = nnx.Variable(jnp.zeros((), jnp.int32))

        def __call__(self, x):
            y = self.linear(x)
            self.calls[...] += 1                          # side effects on the module's state,
            self.seen[...] = self.seen[...] + y.mean(0)   # like BatchNorm's running statistics
            return y

    model = Model(nnx.Rngs(0))
    x = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
    before = jax.tree_util.tree_map(np.array, nnx.state(model))
    kernel = model.linear.kernel
    jaxcheck.check(lambda m, x: jnp.sum(jnp.sin(m(x)) * jnp.arange(2.0)), model, x)
    after = jax.tree_util.tree_map(np.array, nnx.state(model))
    assert jax.tree_util.tree_structure(after) == jax.tree_util.tree_structure(before)
    for a, b in zip(jax.tree_util.tree_leaves(after), jax.tree_util.tree_leaves(before)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert model.linear.kernel is kernel and int(model.calls[...]) == 0


# JAX's configuration ------------------------------------------------------------------------

def jax_state():
    return (dict(jax.config.values), jnp.zeros(()).dtype, jnp.asarray(1.0).dtype,
            jnp.arange(3).dtype, jnp.zeros(2).devices())


def raising_fn(p):
    raise RuntimeError("user error")


@pytest.mark.parametrize("call", [
    lambda: jaxcheck.check(lambda w: jnp.sum(jnp.sin(w)), jnp.ones(3)),
    lambda: jaxcheck.check(lambda w: jnp.sum(jnp.sin(w)), jnp.ones(3), precision="native"),
    lambda: jaxcheck.check(lambda w: jnp.sum(jnp.log(w)), -jnp.ones(3)),   # NaN loss: raises
    lambda: jaxcheck.check(raising_fn, jnp.ones(3)),                      # fn raises
    lambda: jaxcheck.check(lambda w: jnp.sum(w), jnp.ones(3), grad_fn=lambda w: w[:2]),
], ids=["passes", "native", "nan-loss", "fn-raises", "bad-grad_fn"])
def test_jax_configuration_is_identical_after_check(call):
    before = jax_state()
    try:
        call()
    except (ValueError, RuntimeError):
        pass
    assert jax_state() == before
    assert not jax.config.jax_enable_x64


def test_a_users_x64_context_is_kept():
    with jax.enable_x64(True):
        before = jax_state()
        with pytest.raises(NonFiniteLossError):
            jaxcheck.check(lambda w: jnp.sum(jnp.log(w)), -jnp.ones(3))
        jaxcheck.check(lambda w: jnp.sum(jnp.sin(w)), jnp.ones(3), precision="native")
        assert jax_state() == before and jax.config.jax_enable_x64
    assert not jax.config.jax_enable_x64


def test_check_leaks_no_tracers():
    w = jnp.linspace(-1.0, 1.0, 4)
    with jax.check_tracer_leaks(True):
        assert jaxcheck.check(lambda w: jnp.sum(jnp.tanh(w) ** 2), w,
                              grad_fn=jax.grad(lambda w: jnp.sum(jnp.tanh(w) ** 2))).ok


# threads ------------------------------------------------------------------------------------

def float64_case():
    """A float64-working-precision check with a wrong gradient entry."""
    params, (x, y) = numpy_problem()
    params = {k: jnp.asarray(v) for k, v in params.items()}

    def wrong(p, x, y):
        g = mlp_grad(p, x, y)
        return {**g, "W": g["W"].at[2, 1].multiply(1.01)}

    return lambda: jaxcheck.check(mlp_loss, params, x, y, grad_fn=wrong)


def native_case():
    """A float32 check in the inputs' own precision: wrong if x64 leaked in from a thread."""
    w = jnp.linspace(-2.0, 2.0, 7, dtype=jnp.float32)
    return lambda: jaxcheck.check(lambda w: jnp.sum(jnp.exp(-w ** 2) * jnp.arange(7.0)), w,
                                  precision="native")


def verdicts(report):
    return [(leaf.path, leaf.status.tolist(), leaf.numerical, leaf.analytic)
            for leaf in report.leaves]


def assert_same(a, b):
    assert len(a) == len(b)
    for (path_a, status_a, num_a, an_a), (path_b, status_b, num_b, an_b) in zip(a, b):
        assert (path_a, status_a) == (path_b, status_b)
        # x64 leaking into the native check would change these at ~1e-7.
        np.testing.assert_allclose(num_a, num_b, rtol=1e-12, atol=0)
        np.testing.assert_allclose(an_a, an_b, rtol=1e-12, atol=0)


def test_two_checks_in_two_threads_give_the_sequential_verdicts():
    cases = {"float64": float64_case(), "native": native_case()}
    sequential = {name: verdicts(run()) for name, run in cases.items()}
    assert sequential["float64"][0][0] == "['W']" and 2 in sequential["float64"][0][1]

    results, errors, dtypes = {}, [], []
    start = threading.Barrier(len(cases) + 1)

    def worker(name, run):
        try:
            start.wait()
            results[name] = verdicts(run())
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=item) for item in cases.items()]
    for t in threads:
        t.start()
    start.wait()
    while any(t.is_alive() for t in threads):  # the main thread never sees x64 switched on
        dtypes.append(jnp.zeros(()).dtype)
        for t in threads:
            t.join(0.01)
    if errors:
        raise errors[0]
    for name in cases:
        assert_same(results[name], sequential[name])
    assert set(dtypes) <= {np.dtype("float32")}
    assert not jax.config.jax_enable_x64


# jax.jit ------------------------------------------------------------------------------------

def test_check_inside_jit_raises_a_clear_error():
    loss = lambda w: jnp.sum(jnp.sin(w))
    with pytest.raises(TypeError, match=r"params: expected concrete arrays, got a JAX tracer"
                                        r".*call it outside any transformation"):
        jax.jit(lambda w: jaxcheck.check(loss, w).ok)(jnp.ones(3))


def test_check_inside_jit_with_concrete_params_raises_a_clear_error():
    params = np.ones(3, np.float32)
    with pytest.raises(TypeError, match=r"check: expected to be called outside jax\.jit"):
        jax.jit(lambda x: jaxcheck.check(lambda p: jnp.sum(jnp.sin(p * x)), params).ok)(2.0)


def test_check_of_jitted_fn_and_grad_fn_works():
    loss = jax.jit(lambda p, x: jnp.sum(jnp.tanh(p["w"] * x)))
    wrong = jax.jit(lambda p, x: {"w": jax.grad(loss)(p, x)["w"].at[1].add(1e-3)})
    params, x = {"w": jnp.array([0.1, -0.4, 0.8])}, jnp.array([1.0, 2.0, -1.0])
    assert jaxcheck.check(loss, params, x, grad_fn=jax.jit(jax.grad(loss))).ok
    assert [f.location for f in jaxcheck.check(loss, params, x, grad_fn=wrong).failures] == [
        "['w'][1]"]
