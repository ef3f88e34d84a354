"""Small hand-written models shared by the core tests (a module, not a conftest, so other test
files can import exactly what they use)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def mlp_problem(sizes=(5, 8, 3), n=16, seed=0, dtype=jnp.float32, lam=0.0):
    """A tanh MLP regression: params dict W0, b0, W1, b1, ...; data (x, y)."""
    rng = np.random.default_rng(seed)
    params = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"W{i}"] = jnp.asarray(rng.standard_normal((a, b)) / np.sqrt(a), dtype)
        params[f"b{i}"] = jnp.asarray(0.1 * rng.standard_normal(b), dtype)
    x = jnp.asarray(rng.standard_normal((n, sizes[0])), dtype)
    y = jnp.asarray(rng.standard_normal((n, sizes[-1])), dtype)
    n_layers = len(sizes) - 1

    def forward(p, x):
        h, hs = x, [x]
        for i in range(n_layers):
            z = h @ p[f"W{i}"] + p[f"b{i}"]
            h = jnp.tanh(z) if i < n_layers - 1 else z
            hs.append(h)
        return h, hs

    def loss(p, x, y):
        out, _ = forward(p, x)
        reg = sum(jnp.sum(p[f"W{i}"] ** 2) for i in range(n_layers))
        return 0.5 * jnp.mean((out - y) ** 2) + 0.5 * lam * reg

    def backprop(p, x, y, l2_factor=1.0):
        out, hs = forward(p, x)
        d = (out - y) / out.size
        g = {}
        for i in reversed(range(n_layers)):
            g[f"W{i}"] = hs[i].T @ d + l2_factor * lam * p[f"W{i}"]
            g[f"b{i}"] = d.sum(0)
            if i > 0:
                d = (d @ p[f"W{i}"].T) * (1 - hs[i] ** 2)
        return g

    return loss, backprop, params, (x, y)


def with_hook(grad_fn, hook):
    """grad_fn whose result is passed through hook(g) (a planted bug)."""
    def hooked(p, *args):
        return hook(dict(grad_fn(p, *args)))
    return hooked


def relu_kink_problem(seed=0):
    """A ReLU net whose first-layer pre-activations are exactly 0 for many samples."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.integers(-2, 3, size=(24, 4)), jnp.float32)
    params = {"W0": jnp.asarray(rng.integers(-1, 2, size=(4, 6)), jnp.float32),
              "b0": jnp.asarray(rng.integers(-1, 2, size=6), jnp.float32),
              "w1": jnp.asarray(rng.standard_normal(6) / 3, jnp.float32)}
    y = jnp.asarray(rng.standard_normal(24), jnp.float32)

    def loss(p, x, y):
        h = jax.nn.relu(x @ p["W0"] + p["b0"])
        return 0.5 * jnp.mean((h @ p["w1"] - y) ** 2)

    def backprop(p, x, y, relu_grad_at_zero=0.0):
        z = x @ p["W0"] + p["b0"]
        h = jnp.maximum(z, 0.0)
        d = (h @ p["w1"] - y) / y.size
        mask = jnp.where(z > 0, 1.0, jnp.where(z == 0, relu_grad_at_zero, 0.0))
        dz = d[:, None] * p["w1"][None, :] * mask
        return {"W0": x.T @ dz, "b0": dz.sum(0), "w1": h.T @ d}

    return loss, backprop, params, (x, y)
