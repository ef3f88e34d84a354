"""The built-in demo: a hand-written MLP backprop, once correct and once with a planted bug.

The model is the classic one-hidden-layer tanh network with a softmax cross-entropy loss and an
L2 penalty, with parameters in float32 (JAX's default), where a fixed ε=1e-7 finite difference
flags even the correct backprop.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

LAMBDA = 1e-3


def init(seed: int = 0, sizes: tuple[int, int, int] = (8, 16, 4), batch: int = 32):
    """Parameters (float32 dict) and data `(x, labels)` of the demo problem."""
    rng = np.random.default_rng(seed)
    n_in, n_hidden, n_out = sizes
    params = {
        "W1": rng.standard_normal((n_in, n_hidden)) / np.sqrt(n_in),
        "b1": 0.1 * rng.standard_normal(n_hidden),
        "W2": rng.standard_normal((n_hidden, n_out)) / np.sqrt(n_hidden),
        "b2": 0.1 * rng.standard_normal(n_out),
    }
    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    x = jnp.asarray(rng.standard_normal((batch, n_in)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, n_out, batch), jnp.int32)
    return params, (x, labels)


def loss(params: dict, x: Any, labels: Any) -> Any:
    """Mean softmax cross-entropy of a tanh MLP plus (λ/2)·‖W‖² on both weight matrices."""
    h = jnp.tanh(x @ params["W1"] + params["b1"])
    logits = h @ params["W2"] + params["b2"]
    logp = jax.nn.log_softmax(logits)
    data = -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))
    return data + 0.5 * LAMBDA * (jnp.sum(params["W1"] ** 2) + jnp.sum(params["W2"] ** 2))


def backprop(params: dict, x: Any, labels: Any) -> dict:
    """The hand-written gradient of `loss` (correct)."""
    z1 = x @ params["W1"] + params["b1"]
    h = jnp.tanh(z1)
    logits = h @ params["W2"] + params["b2"]
    p = jax.nn.softmax(logits)
    d_logits = (p - jax.nn.one_hot(labels, logits.shape[1], dtype=p.dtype)) / x.shape[0]
    d_z1 = (d_logits @ params["W2"].T) * (1.0 - h**2)
    return {
        "W1": x.T @ d_z1 + LAMBDA * params["W1"],
        "b1": d_z1.sum(0),
        "W2": h.T @ d_logits + LAMBDA * params["W2"],
        "b2": d_logits.sum(0),
    }


def buggy_backprop(params: dict, x: Any, labels: Any) -> dict:
    """`backprop` with the L2 term forgotten on W2, and one entry of b1 scaled by 1.1."""
    g = backprop(params, x, labels)
    g["W2"] = g["W2"] - LAMBDA * params["W2"]
    g["b1"] = g["b1"].at[3].multiply(1.1)
    return g


def run() -> int:
    """Check both backprops and print their reports; exit status 0 when the verdicts are right."""
    from ..api.check import check

    params, args = init()
    good = check(loss, params, *args, grad_fn=backprop)
    bad = check(loss, params, *args, grad_fn=buggy_backprop)
    print("== correct hand-written backprop ==")
    print(good)
    print()
    print("== buggy hand-written backprop (L2 term missing on W2, b1[3] scaled by 1.1) ==")
    print(bad)
    return 0 if good.ok and not bad.ok else 1
