"""The loss at a perturbed point from the unperturbed one (`local_changes`).

The interpreted evaluation must give the loss at the perturbed point (to rounding) for every
way a leaf can enter the loss: either operand of a product, transposed or reshaped first, batch
dimensions, broadcasts, sums, elementwise operations, inside a nested jit, alongside other uses
of the leaf; a direction's evaluation must say when it is the loss at the exact point.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcheck
from jaxcheck.evaluation import engine
from jaxcheck.evaluation import local_changes as lc
from jaxcheck.inputs import pytree
from jaxcheck.inputs.problem import Problem

RNG = np.random.default_rng(0)


def _mlp(p, x):
    h = jnp.tanh(x @ p["w"] + p["b"])
    return jnp.sum(jnp.sin(h @ p["v"]))


def _transposed(p, x):  # torch-style weight (out, in), used through .T
    return jnp.sum(jnp.tanh(x @ p["w"].T) ** 2) + jnp.sum(p["b"])


def _weight_first(p, x):  # the leaf as the left operand
    return jnp.sum(jnp.cos(p["w"].T @ x.T))


def _attention(p, x):  # batch dimensions in the product
    q = jnp.einsum("bij,bjk->bik", p["q"], x.reshape(2, 3, 4))
    return jnp.sum(jax.nn.softmax(q, axis=-1) * jnp.arange(4.0))


def _regularised(p, x):  # the leaf also used outside a product
    return jnp.sum(jnp.tanh(x @ p["w"])) + 0.3 * jnp.sum(p["w"] ** 2)


@jax.jit
def _inner(w, x):
    return jnp.tanh(x @ w.reshape(4, 3))


def _nested(p, x):  # a view and a product inside a user's jit
    return jnp.sum(_inner(p["w"].reshape(-1), x) ** 3)


def _scaled(p, x):  # a scalar leaf, broadcast
    return jnp.sum(jnp.exp(p["s"] * (x @ p["w"])))


def _selected(p, x):  # select, max, reductions over the changed axis
    y = x @ p["w"]
    return jnp.sum(jnp.where(y > 0, y, 0.1 * y)) + jnp.max(y) + jnp.sum(jnp.mean(y, axis=0) ** 2)


@jax.custom_vjp
def _custom_tanh(x):
    return jnp.tanh(x)


_custom_tanh.defvjp(lambda x: (jnp.tanh(x), x), lambda x, g: (g / jnp.cosh(x) ** 2,))


def _relu_custom(p, x):  # custom_jvp (relu), custom_vjp and checkpoint calls, opened
    h = jax.nn.relu(x @ p["w"])
    return jnp.sum(jax.checkpoint(lambda z: _custom_tanh(z) @ p["v"])(h) ** 2)


CASES = {
    "mlp": (_mlp, {"w": (4, 3), "b": (3,), "v": (3, 2)}, (5, 4), "w"),
    "mlp_second": (_mlp, {"w": (4, 3), "b": (3,), "v": (3, 2)}, (5, 4), "v"),
    "transposed": (_transposed, {"w": (3, 4), "b": (2,)}, (5, 4), "w"),
    "weight_first": (_weight_first, {"w": (4, 3)}, (5, 4), "w"),
    "attention": (_attention, {"q": (2, 5, 3)}, (24,), "q"),
    "regularised": (_regularised, {"w": (4, 3)}, (5, 4), "w"),
    "nested": (_nested, {"w": (4, 3)}, (5, 4), "w"),
    "bias": (_mlp, {"w": (4, 3), "b": (3,), "v": (3, 2)}, (5, 4), "b"),
    "scalar": (_scaled, {"s": (), "w": (4, 3)}, (5, 4), "s"),
    "selected": (_selected, {"w": (4, 3)}, (5, 4), "w"),
    "custom": (_relu_custom, {"w": (4, 3), "v": (3, 2)}, (5, 4), "w"),
}


def _setup(name):
    fn, shapes, x_shape, key = CASES[name]
    params = {k: jnp.asarray(RNG.normal(size=s)) for k, s in shapes.items()}
    x = jnp.asarray(RNG.normal(size=x_shape))
    keys = sorted(params)
    position = keys.index(key)
    dynamic = tuple(params[k] for k in keys)

    def loss(param_dynamic, arg_dynamic):
        return fn(dict(zip(keys, param_dynamic)), *arg_dynamic)

    return loss, position, dynamic, (x,)


def _traced(name):
    """The case's loss, the leaf's position, the dynamic leaves, args and the traced loss."""
    loss, position, dynamic, args = _setup(name)
    return loss, position, dynamic, args, lc.trace(loss, position, dynamic, args)


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_hot_update_gives_the_loss_at_the_perturbed_point(name):
    with jax.enable_x64(True):
        loss, position, dynamic, args, traced = _traced(name)
        leaf = dynamic[position]
        at = jax.jit(jax.vmap(traced.at_entry, in_axes=(None, None, 0, 0)))
        values = np.asarray(leaf).reshape(-1) + 0.37
        got = at(dynamic, args, jnp.arange(leaf.size), jnp.asarray(values))
        for i, value in enumerate(values):
            perturbed = list(dynamic)
            perturbed[position] = leaf.reshape(-1).at[i].set(value).reshape(leaf.shape)
            want = loss(tuple(perturbed), args)
            np.testing.assert_allclose(got[i], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_along_a_direction_and_whether_it_is_exact(name):
    with jax.enable_x64(True):
        loss, position, dynamic, args, traced = _traced(name)
        leaf = dynamic[position]
        u = jnp.asarray(RNG.normal(size=leaf.size))
        for t in (0.0, 1e-3, -0.5):
            got, exact = traced.along(dynamic, args, u, jnp.asarray(t))
            perturbed = list(dynamic)
            perturbed[position] = (leaf.reshape(-1) + t * u).reshape(leaf.shape)
            np.testing.assert_allclose(got, loss(tuple(perturbed), args), rtol=1e-12)
            # exact only when every use of the leaf is a product
            assert exact == (name in ("mlp", "mlp_second", "transposed", "weight_first",
                                      "attention", "nested", "selected", "custom"))


def test_a_product_of_the_leaf_with_itself_is_evaluated_as_written():
    with jax.enable_x64(True):
        w = jnp.asarray(RNG.normal(size=(3, 3)))
        loss = lambda pd, ad: jnp.sum(jnp.sin(pd[0] @ pd[0].T))
        traced = lc.trace(loss, 0, (w,), ())
        got = traced.at_entry((w,), (), 4, 2.0)
        np.testing.assert_allclose(got, loss((w.at[1, 1].set(2.0),), ()), rtol=1e-13)


@pytest.fixture
def local_changes_everywhere(monkeypatch):
    """Follow changes through the loss for leaves of any size (the engine skips small ones)."""
    monkeypatch.setattr(engine, "LOCAL_CHANGES_MIN_SIZE", 1)
    engine.clear_cache()
    yield
    engine.clear_cache()


def test_engine_values_match_the_direct_evaluation(local_changes_everywhere, monkeypatch):
    with jax.enable_x64(True):
        _, position, dynamic, args = _setup("mlp")
        leaf = dynamic[position]
        p = pytree.split(dict(zip(["b", "v", "w"], dynamic)))
        a = pytree.split(args, check_floats=False)
        problem = Problem(_mlp, p.structure, a.structure)
        idx = np.tile(np.arange(leaf.size), 2)
        values = np.concatenate([np.asarray(leaf).reshape(-1) + 1e-5,
                                 np.asarray(leaf).reshape(-1) - 1e-5])
        local = engine.evaluate(problem, position, p.dynamic, a.dynamic, idx, values, 8)
        monkeypatch.setattr(engine, "LOCAL_CHANGES_MIN_SIZE", 10**9)
        engine.clear_cache()
        direct = engine.evaluate(problem, position, p.dynamic, a.dynamic, idx, values, 8)
    np.testing.assert_allclose(local, direct, rtol=1e-14)


def test_full_check_finds_a_wrong_entry_exactly_with_local_changes(local_changes_everywhere):
    with jax.enable_x64(True):
        params = {"w": jnp.asarray(RNG.normal(size=(6, 5))), "b": jnp.zeros(5),
                  "v": jnp.asarray(RNG.normal(size=(5, 3)))}
        x = jnp.asarray(RNG.normal(size=(7, 6)))

        def wrong(p, x):
            g = jax.grad(_mlp)(p, x)
            return {**g, "w": g["w"].at[2, 1].multiply(1.001)}

        assert jaxcheck.check(_mlp, params, x).ok
        report = jaxcheck.check(_mlp, params, x, grad_fn=wrong)
    assert [f.location for f in report.failures] == ["['w'][2, 1]"]
