"""Randomised models for the verdict tests: seeded NumPy draws of MLP-like losses.

`draw(seed)` returns a `Model`: depth 1–3, widths 8–257 (log-uniform), an activation (tanh,
relu, gelu, sigmoid, softplus, silu, elu), a head (sum, mean, squared mean, MSE,
cross-entropy, Huber, logsumexp, L1), optional layer norm, residual connections, dropout
with a fixed key and an L2 term, float32 or float64, and input and parameter scales from
1e-2 to 30 (log-uniform). Everything follows from the seed, so a failing draw is rerun by
its number.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS: dict[str, Callable[[Any], Any]] = {
    "tanh": jnp.tanh, "relu": jax.nn.relu, "gelu": jax.nn.gelu, "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus, "silu": jax.nn.silu, "elu": jax.nn.elu,
}
HEADS = ("sum", "mean", "squared_mean", "mse", "cross_entropy", "huber", "logsumexp", "l1")


@dataclasses.dataclass(frozen=True)
class Model:
    seed: int
    dtype: str
    depth: int
    widths: tuple[int, ...]
    activation: str
    head: str
    layer_norm: bool
    residual: bool
    dropout: float           # 0: none
    l2: float                # 0: none
    input_scale: float
    param_scale: float
    params: dict[str, Any]
    args: tuple[Any, ...]
    loss: Callable[..., Any]

    def describe(self) -> str:
        return (f"seed={self.seed} {self.dtype} widths={self.widths} {self.activation} "
                f"head={self.head} ln={self.layer_norm} res={self.residual} "
                f"dropout={self.dropout} l2={self.l2:.1e} x~{self.input_scale:.2g} "
                f"θ~{self.param_scale:.2g}")


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _head(name: str, out, y_onehot, y_real):
    if name == "sum":
        return jnp.sum(out)
    if name == "mean":
        return jnp.mean(out)
    if name == "squared_mean":
        return jnp.mean(out) ** 2
    if name == "mse":
        return jnp.mean((out - y_real) ** 2)
    if name == "cross_entropy":
        return -jnp.mean(jnp.sum(y_onehot * jax.nn.log_softmax(out), -1))
    if name == "huber":
        r = out - y_real
        return jnp.mean(jnp.where(jnp.abs(r) < 1.0, 0.5 * r**2, jnp.abs(r) - 0.5))
    if name == "logsumexp":
        return jnp.mean(jax.nn.logsumexp(out, -1))
    if name == "l1":
        return jnp.mean(jnp.abs(out - y_real))
    raise ValueError(name)


def draw(seed: int, arrays: bool = True) -> Model:
    """The model of draw `seed` (float64 ones are checked inside `jax.enable_x64(True)`).
    With `arrays=False`, only its description: params and args are left empty."""
    rng = np.random.default_rng(seed)
    dtype = str(rng.choice(["float32", "float64"]))
    depth = int(rng.integers(1, 4))
    residual = bool(rng.random() < 0.3)
    widths = [int(round(_log_uniform(rng, 8, 257)))]
    for _ in range(depth - 1):  # a residual layer keeps its input's width
        widths.append(widths[-1] if residual else int(round(_log_uniform(rng, 8, 257))))
    activation = str(rng.choice(sorted(ACTIVATIONS)))
    head = str(rng.choice(HEADS))
    layer_norm = bool(rng.random() < 0.3)
    dropout = float(rng.choice([0.0, 0.0, 0.2]))
    l2 = float(rng.choice([0.0, _log_uniform(rng, 1e-5, 1e-2)]))
    input_scale = _log_uniform(rng, 1e-2, 30)
    param_scale = _log_uniform(rng, 1e-2, 30)
    batch, d_in = int(rng.integers(4, 17)), int(rng.integers(2, 17))
    d_out = int(rng.integers(2, 11))

    sizes = [d_in, *widths, d_out]
    np_dtype = np.dtype(dtype)
    params: dict[str, Any] = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        # scaled like a Glorot init times the draw's parameter scale
        params[f"W{i}"] = (rng.standard_normal((a, b)) * param_scale / np.sqrt(a)).astype(np_dtype)
        params[f"b{i}"] = (rng.standard_normal(b) * 0.1 * param_scale).astype(np_dtype)
    if layer_norm:
        params["ln_gain"] = (1.0 + 0.1 * rng.standard_normal(widths[-1])).astype(np_dtype)
        params["ln_bias"] = (0.1 * rng.standard_normal(widths[-1])).astype(np_dtype)
    x = (rng.standard_normal((batch, d_in)) * input_scale).astype(np_dtype)
    labels = rng.integers(0, d_out, batch)
    y_onehot = np.eye(d_out, dtype=np_dtype)[labels]
    y_real = rng.standard_normal((batch, d_out)).astype(np_dtype)
    act = ACTIVATIONS[activation]
    n_layers = len(sizes) - 1

    def loss(p, x, y_onehot, y_real, key):
        h = x
        for i in range(n_layers - 1):
            z = act(h @ p[f"W{i}"] + p[f"b{i}"])
            h = h + z if residual and i > 0 else z
        if layer_norm:
            mu = jnp.mean(h, -1, keepdims=True)
            var = jnp.mean((h - mu) ** 2, -1, keepdims=True)
            h = (h - mu) / jnp.sqrt(var + 1e-5) * p["ln_gain"] + p["ln_bias"]
        if dropout:
            keep = jax.random.bernoulli(key, 1.0 - dropout, h.shape)
            h = jnp.where(keep, h / (1.0 - dropout), 0.0)
        out = h @ p[f"W{n_layers - 1}"] + p[f"b{n_layers - 1}"]
        value = _head(head, out, y_onehot, y_real)
        if l2:
            value = value + l2 * sum(jnp.sum(w**2) for k, w in p.items() if k.startswith("W"))
        return value

    if not arrays:
        return Model(seed, dtype, depth, tuple(widths), activation, head, layer_norm, residual,
                     dropout, l2, input_scale, param_scale, {}, (), loss)
    with jax.enable_x64(dtype == "float64"):
        jparams = {k: jnp.asarray(v) for k, v in params.items()}
        args = (jnp.asarray(x), jnp.asarray(y_onehot), jnp.asarray(y_real),
                jax.random.key(seed))
    return Model(seed, dtype, depth, tuple(widths), activation, head, layer_norm, residual,
                 dropout, l2, input_scale, param_scale, jparams, args, loss)


def planted_entry(model: Model, grads: dict[str, np.ndarray],
                  rng: np.random.Generator) -> tuple[str, int]:
    """A leaf and a flat index whose gradient is above the leaf's median (in magnitude)."""
    leaves = [k for k, g in grads.items() if np.sum(np.abs(g) > np.median(np.abs(g))) > 0]
    leaf = str(rng.choice(leaves))
    g = np.abs(grads[leaf].reshape(-1))
    return leaf, int(rng.choice(np.flatnonzero(g > np.median(g))))
