"""Fast mode at scale: one wrong entry among a million parameters, found exactly."""
import jax.numpy as jnp
import numpy as np

import jaxcheck


def test_fast_mode_finds_the_one_wrong_entry_of_a_million_parameter_mlp():
    rng = np.random.default_rng(0)
    d_in, hidden, d_out, batch = 1000, 1000, 4, 8
    params = {"W0": jnp.asarray(rng.standard_normal((d_in, hidden)) / np.sqrt(d_in), jnp.float32),
              "b0": jnp.zeros(hidden, jnp.float32),
              "W1": jnp.asarray(rng.standard_normal((hidden, d_out)) / np.sqrt(hidden),
                                jnp.float32)}
    assert sum(v.size for v in params.values()) >= 1_000_000
    x = jnp.asarray(rng.standard_normal((batch, d_in)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((batch, d_out)), jnp.float32)

    def loss(p, x, y):
        return 0.5 * jnp.mean((jnp.tanh(x @ p["W0"] + p["b0"]) @ p["W1"] - y) ** 2)

    def backprop(p, x, y):
        a = jnp.tanh(x @ p["W0"] + p["b0"])
        d = (a @ p["W1"] - y) / y.size
        dz = (d @ p["W1"].T) * (1 - a**2)
        return {"W0": x.T @ dz, "b0": dz.sum(0), "W1": a.T @ d}

    g = np.abs(np.asarray(backprop(params, x, y)["W0"]))
    i, j = np.unravel_index(int(np.argsort(g.ravel())[int(0.9 * g.size)]), g.shape)

    def buggy(p, x, y):  # exactly one entry 1% too large
        out = backprop(p, x, y)
        return {**out, "W0": out["W0"].at[i, j].multiply(1.01)}

    report = jaxcheck.check(loss, params, x, y, grad_fn=buggy, mode="fast")
    assert [(f.path, f.index) for f in report.failures] == [("['W0']", (int(i), int(j)))]
    # the joint test, a probe of each leaf, W0's dirty path and its block (its own test not
    # run: the block's FAIL decides it), and the first joint test again, with the block's
    # gradient replaced by its measured values, clearing the other two leaves and W0 without
    # the block: no evaluation (full mode: > 2,000,000)
    assert report.info["evaluations"] < 130
    assert report.info["joint"]["passed"] is False   # the joint test saw it first
    assert report.info["clearing"]["covered"] == ["['W0']", "['W1']", "['b0']"]
    assert report.info["clearing"]["first_test"] is True
    hole = report.info["clearing"]["holes"]["['W0']"]
    assert hole[0] <= int(i) * hidden + int(j) < hole[1] and hole[1] - hole[0] <= 4
    w0 = next(leaf for leaf in report.leaves if leaf.path == "['W0']")
    assert w0.directions is not None and w0.directions.k == 0 and w0.directions.undecided == 21

    # the correct backprop passes the joint test of all three leaves: 2·22 + 1 points, and
    # f(θ) + 3 Taylor steps per leaf
    good = jaxcheck.check(loss, params, x, y, grad_fn=backprop, mode="fast")
    assert good.ok and good.info["joint"]["covered"] == ["['W0']", "['W1']", "['b0']"]
    assert good.info["evaluations"] == 45 + 3 * 4
