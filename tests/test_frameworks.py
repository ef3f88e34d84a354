"""Flax nnx, Flax linen, Equinox and Haiku-style params, checked with no adapter from the user."""
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

import jaxcheck

X = jnp.linspace(-1.0, 1.0, 15).reshape(5, 3)
Y = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -0.5], [0.2, 0.3]])


def snapshot(tree):
    """Every leaf as NumPy (PRNG keys as their key data), to compare trees exactly."""
    def plain(v):
        if jnp.issubdtype(v.dtype, jax.dtypes.prng_key):
            v = jax.random.key_data(v)
        return np.asarray(v)
    return [plain(v) for v in jax.tree.leaves(tree)]


def same(a, b):
    return len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y)
                                    for x, y in zip(a, b))


# --- Flax nnx ------------------------------------------------------------------------------

class NnxNet(nnx.Module):
    """Train mode throughout: BatchNorm on batch statistics, Dropout drawing from Rngs."""

    def __init__(self, rngs):
        self.layers = nnx.List([nnx.Linear(3, 4, use_bias=False, rngs=rngs),
                              nnx.Linear(4, 2, use_bias=False, rngs=rngs)])
        self.norm = nnx.BatchNorm(4, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        h = self.drop(jnp.tanh(self.norm(self.layers[0](x))))
        return self.layers[1](h)


def nnx_loss(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


@pytest.fixture(scope="module")
def nnx_model():
    return NnxNet(nnx.Rngs(0, dropout=1))


def test_nnx_dropout_batchnorm_model_passes_and_is_left_unchanged(nnx_model):
    before = snapshot(nnx.state(nnx_model))
    report = jaxcheck.check(nnx_loss, nnx_model, X, Y)
    # Every perturbation saw the same dropout mask, or the differences would be noise.
    assert report.ok, str(report)
    # BatchStat and RNG state are carried, not checked.
    assert [leaf.path for leaf in report.leaves] == [
        ".layers[0].kernel", ".layers[1].kernel", ".norm.bias", ".norm.scale"]
    after = snapshot(nnx.state(nnx_model))
    assert same(before, after)  # params, batch stats, RNG key and count
    assert int(nnx_model.drop.rngs.count[...]) == 0


def test_nnx_grad_fn_bug_is_localised(nnx_model):
    def wrong(model, x, y):  # nnx.grad's State of Params, one entry off by 1%
        g = nnx.grad(nnx_loss)(model, x, y)
        kernel = g["layers"][1]["kernel"]
        kernel[...] = kernel[...].at[2, 1].multiply(1.01)
        return g

    before = snapshot(nnx.state(nnx_model))
    report = jaxcheck.check(nnx_loss, nnx_model, X, Y, grad_fn=wrong)
    assert [f.location for f in report.failures] == [".layers[1].kernel[2, 1]"]
    assert same(before, snapshot(nnx.state(nnx_model)))

    def as_pure_dict(model, x, y):  # also accepted: the State as a pure dict
        return nnx.grad(nnx_loss)(model, x, y).to_pure_dict()

    assert jaxcheck.check(nnx_loss, nnx_model, X, Y, grad_fn=as_pure_dict).ok


def test_nnx_grad_fn_missing_params_is_named(nnx_model):
    def partial(model, x, y):
        g = nnx.grad(nnx_loss)(model, x, y)
        g.pop("norm")
        return g

    with pytest.raises(ValueError, match=r"grad_fn: expected the gradient of every nnx.Param"
                                         r".*missing .norm.bias, .norm.scale; got leaves"):
        jaxcheck.check(nnx_loss, nnx_model, X, Y, grad_fn=partial)


def test_nnx_state_as_params_gets_module_style_paths():
    graphdef, state = nnx.split(nnx.Sequential(nnx.Linear(3, 2, rngs=nnx.Rngs(0))))

    def loss(state, x):
        return jnp.sum(jnp.tanh(nnx.merge(graphdef, state)(x)) ** 2)

    def wrong(state, x):  # a pure dict of gradients is matched by path
        g = jax.grad(loss)(state, x).to_pure_dict()
        g["layers"][0]["bias"] = g["layers"][0]["bias"].at[1].add(0.1)
        return g

    report = jaxcheck.check(loss, state, X, grad_fn=wrong)
    assert [leaf.path for leaf in report.leaves] == [".layers[0].bias", ".layers[0].kernel"]
    assert [f.location for f in report.failures] == [".layers[0].bias[1]"]


def test_nnx_module_as_unchecked_argument_is_copied_too():
    model = NnxNet(nnx.Rngs(0, dropout=2))

    def loss(model, x):  # gradient with respect to the inputs, through dropout
        return jnp.sum(jnp.sin(model(x)))

    report = jaxcheck.check(loss, model, X, argnums=1)
    assert report.ok and [leaf.path for leaf in report.leaves] == [""]
    assert int(model.drop.rngs.count[...]) == 0


# --- Flax linen ----------------------------------------------------------------------------

class LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.BatchNorm(use_running_average=False)(nn.Dense(4, use_bias=False)(x))
        return nn.Dense(2)(jnp.tanh(h))


LINEN = LinenNet()


def linen_loss(variables, x, y):
    out, _ = LINEN.apply(variables, x, mutable=["batch_stats"])
    return jnp.mean((out - y) ** 2)


def test_linen_checks_params_only_and_localises_a_bug():
    variables = LINEN.init(jax.random.key(1), X)
    variables["batch_stats"] = jax.tree.map(lambda s: s + 0.25, variables["batch_stats"])
    before = snapshot(variables)

    def wrong(v, x, y):  # gradients of the whole variables; only "params" is read
        g = jax.grad(linen_loss)(v, x, y)
        g["params"]["Dense_1"]["bias"] = g["params"]["Dense_1"]["bias"].at[1].add(1e-3)
        return g

    report = jaxcheck.check(linen_loss, variables, X, Y, grad_fn=wrong)
    assert [f.location for f in report.failures] == ["['params']['Dense_1']['bias'][1]"]
    assert all(leaf.path.startswith("['params']") for leaf in report.leaves)
    assert "['params']['Dense_0']['kernel']" in [leaf.path for leaf in report.leaves]
    assert jaxcheck.check(linen_loss, variables, X, Y).ok
    assert same(before, snapshot(variables))
    assert set(variables) == {"params", "batch_stats"}


# --- Equinox -------------------------------------------------------------------------------

class EqxNet(eqx.Module):
    layers: list
    scale: float             # a Python float field: not an inexact array, so not checked
    calls: jax.Array         # an int array: carried
    activation: callable = eqx.field(static=True)

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.layers = [eqx.nn.Linear(3, 4, key=k1), eqx.nn.Linear(4, 2, key=k2)]
        self.scale, self.calls, self.activation = 0.5, jnp.array(3), jnp.tanh

    def __call__(self, x):
        return self.scale * self.layers[1](self.activation(self.layers[0](x)))


def eqx_loss(model, x, y):
    assert model.activation is jnp.tanh and model.scale == 0.5  # static fields kept
    assert model.calls.dtype == jnp.int32 or model.calls.dtype == jnp.int64
    return jnp.mean((jax.vmap(model)(x) - y) ** 2)


def test_equinox_module_passes_keeps_static_fields_and_localises_a_bug():
    model = EqxNet(jax.random.key(0))
    report = jaxcheck.check(eqx_loss, model, X, Y)
    assert report.ok, str(report)
    assert [leaf.path for leaf in report.leaves] == [
        ".layers[0].weight", ".layers[0].bias", ".layers[1].weight", ".layers[1].bias"]

    def wrong(m, x, y):  # eqx.filter_grad's module of gradients, one entry off
        g = eqx.filter_grad(eqx_loss)(m, x, y)
        return eqx.tree_at(lambda t: t.layers[1].weight, g,
                           g.layers[1].weight.at[0, 2].multiply(1.01))

    report = jaxcheck.check(eqx_loss, model, X, Y, grad_fn=wrong)
    assert [f.location for f in report.failures] == [".layers[1].weight[0, 2]"]
    assert model.scale == 0.5 and model.layers[0].weight.dtype == jnp.float32


# --- Haiku-style params and an optax loss ---------------------------------------------------

def haiku_style_params():
    k1, k2 = jax.random.split(jax.random.key(2))
    return {"linear": {"w": 0.5 * jax.random.normal(k1, (3, 4)), "b": jnp.zeros(4)},
            "linear_1": {"w": 0.5 * jax.random.normal(k2, (4, 3)), "b": jnp.zeros(3)}}


def haiku_loss(params, x, labels):
    h = jnp.tanh(x @ params["linear"]["w"] + params["linear"]["b"])
    logits = h @ params["linear_1"]["w"] + params["linear_1"]["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def haiku_backprop(params, x, labels, bug=False):
    """Hand-written backprop of `haiku_loss`; with `bug`, one bias entry drops its 1/n."""
    h = jnp.tanh(x @ params["linear"]["w"] + params["linear"]["b"])
    logits = h @ params["linear_1"]["w"] + params["linear_1"]["b"]
    d = (jax.nn.softmax(logits) - jax.nn.one_hot(labels, 3)) / x.shape[0]
    db = d.sum(0)
    if bug:
        db = db.at[2].multiply(x.shape[0])
    dh = d @ params["linear_1"]["w"].T * (1 - h ** 2)
    return {"linear": {"w": x.T @ dh, "b": dh.sum(0)},
            "linear_1": {"w": h.T @ d, "b": db}}


def test_haiku_style_optax_loss_backprop_bug_is_localised():
    params, labels = haiku_style_params(), jnp.array([0, 2, 1, 2, 0])
    assert jaxcheck.check(haiku_loss, params, X, labels, grad_fn=haiku_backprop).ok
    report = jaxcheck.check(haiku_loss, params, X, labels,
                            grad_fn=lambda p, x, t: haiku_backprop(p, x, t, bug=True))
    assert [f.location for f in report.failures] == ["['linear_1']['b'][2]"]
