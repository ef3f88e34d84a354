import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxcheck


def _normal(rng, *shape):
    return jnp.asarray(rng.standard_normal(shape), jnp.float32)


def _layers(depth, width, scale, seed=0):
    rng = np.random.default_rng(seed)
    return [{"W": scale * _normal(rng, width, width) / np.sqrt(width), "b": jnp.zeros(width)}
            for _ in range(depth)]


def _mse(activation):
    def loss(layers, x, y):
        h = x
        for layer in layers:
            h = activation(h @ layer["W"] + layer["b"])
        return jnp.mean((h - y) ** 2)
    return loss


def _data(width, batch=16, seed=1):
    rng = np.random.default_rng(seed)
    return _normal(rng, batch, width), _normal(rng, batch, width)


def test_flags_vanishing_gradients_in_early_layers_of_deep_sigmoid_net():
    layers, (x, y) = _layers(depth=8, width=8, scale=0.1), _data(8)
    grad = jax.jit(jax.grad(_mse(jax.nn.sigmoid)))
    h = jaxcheck.health([grad(layers, x, y), grad(layers, 2 * x, y)])
    vanishing = h.flagged("vanishing")
    assert "[0]['W']" in vanishing and "[1]['W']" in vanishing
    assert "[7]['W']" not in vanishing and "[7]['b']" not in vanishing
    assert not h.flagged("exploding") and not h.flagged("dead")
    assert h.leaf("[0]['W']").grad_rms[0] < 1e-4 * h.leaf("[7]['W']").grad_rms[0]


def test_flags_exploding_gradients_of_deep_linear_net_with_large_init():
    layers, (x, y) = _layers(depth=8, width=8, scale=4.0), _data(8)
    # One gradient whose top level is a list (of layers) is wrapped: a bare list is a history.
    h = jaxcheck.health([jax.grad(_mse(lambda z: z))(layers, x, y)])
    assert h.steps == 1
    assert set(h.flagged("exploding")) >= {f"[{i}]['W']" for i in range(8)}
    assert not h.flagged("vanishing")


def test_well_scaled_net_is_not_flagged():
    layers, (x, y) = _layers(depth=3, width=8, scale=1.0), _data(8)
    h = jaxcheck.health([jax.grad(_mse(jnp.tanh))(layers, x, y)])
    assert h.ok, str(h)
    assert str(h).startswith("jaxcheck.health: OK")


def test_nan_gradient_is_exploding_and_names_the_step():
    good = {"w": jnp.ones(3)}
    h = jaxcheck.health([good, good, {"w": jnp.array([1.0, jnp.nan, 0.0])}])
    assert h.flagged("exploding") == ("['w']",)
    assert "first at step 2" in h.flags[0].message


def test_finds_dead_relu_units_over_a_history():
    w = jnp.asarray(np.random.default_rng(1).standard_normal((4, 6)), jnp.float32)
    b = jnp.array([0.0, -50.0, 0.0, 0.0, -50.0, 0.0])      # units 1 and 4 never fire
    params = {"W": w, "b": b, "V": jnp.ones((6, 1))}

    def loss(p, x):
        return jnp.mean((jax.nn.relu(x @ p["W"] + p["b"]) @ p["V"]) ** 2)

    grad, rng = jax.jit(jax.grad(loss)), np.random.default_rng(0)
    history = [grad(params, jnp.asarray(rng.standard_normal((8, 4)), jnp.float32))
               for _ in range(5)]
    h = jaxcheck.health(history)
    assert h.leaf("['W']").dead_units == (1, 4)
    assert h.leaf("['b']").dead_units == (1, 4)
    assert h.leaf("['V']").dead_units == ()           # its rows are zero, not its unit column
    assert h.flagged("dead") == ("['W']", "['b']")
    assert "2 of 6 units: [1, 4]" in str(h)
    # A unit alive at one step of the history is not dead.
    alive = jaxcheck.health(history + [{"W": jnp.ones((4, 6)), "b": jnp.ones(6),
                                         "V": jnp.ones((6, 1))}])
    assert not alive.flagged("dead")


def test_update_ratios_from_optax_updates_flag_a_frozen_leaf():
    params = {"fast": jnp.ones(4), "frozen": jnp.ones(4)}
    grads = {"fast": jnp.full(4, 0.01), "frozen": jnp.full(4, 1e-8)}
    opt = optax.sgd(0.1)
    updates, _ = opt.update(grads, opt.init(params))
    h = jaxcheck.health(grads, params, updates)
    np.testing.assert_allclose(h.leaf("['fast']").update_ratio, [1e-3])
    assert h.flagged("small_updates") == ("['frozen']",)
    assert not h.flagged("large_updates")
    # One set of parameters for a history of gradients, and no updates: no ratio at all.
    assert jaxcheck.health([grads, grads], params).leaf("['fast']").update_ratio is None


def test_update_ratios_from_a_parameter_history_flag_large_updates():
    params = [{"w": jnp.full(3, 1.0)}, {"w": jnp.full(3, 2.0)}, {"w": jnp.full(3, 4.0)}]
    grads = [{"w": jnp.ones(3)}] * 3
    h = jaxcheck.health(grads, params)
    np.testing.assert_allclose(h.leaf("['w']").update_ratio[:2], [1.0, 1.0])
    assert np.isnan(h.leaf("['w']").update_ratio[2])
    assert h.flagged("large_updates") == ("['w']",)


def test_stacked_history_equals_a_list_history():
    grads = [{"a": jnp.arange(3.0) + t, "n": jnp.int32(3)} for t in range(4)]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *grads)
    listed, from_scan = jaxcheck.health(grads), jaxcheck.health(stacked, stacked=True)
    assert from_scan.steps == listed.steps == 4
    np.testing.assert_allclose(from_scan.leaf("['a']").grad_norm, listed.leaf("['a']").grad_norm)
    assert [x.path for x in listed.leaves] == ["['a']"]        # the int leaf is not a gradient


def test_rejects_mismatched_histories_and_bad_thresholds():
    with pytest.raises(ValueError, match="but step 1 has floating leaves"):
        jaxcheck.health([{"a": jnp.ones(2)}, {"b": jnp.ones(2)}])
    with pytest.raises(ValueError, match="params: expected the floating leaves of grads"):
        jaxcheck.health({"a": jnp.ones(2)}, {"b": jnp.ones(2)})
    with pytest.raises(ValueError, match="params: expected 1, 2 or 3 steps"):
        jaxcheck.health([{"a": jnp.ones(2)}] * 2, [{"a": jnp.ones(2)}] * 5)
    with pytest.raises(ValueError, match="update_ratio"):
        jaxcheck.health({"a": jnp.ones(2)}, update_ratio=(1.0, 0.1))
    with pytest.raises(ValueError, match="unit_axis"):
        jaxcheck.health({"a": jnp.ones((2, 2))}, unit_axis=3)
    with pytest.raises(ValueError, match="grads: expected at least one floating"):
        jaxcheck.health({"a": jnp.int32(1)})
