"""The benchmark's models: float64 MLPs 32-H-H-10, tanh, softmax cross-entropy, batch 64.

The same weights and data are built for JAX (a dict pytree) and, when torch is importable, for
torch (a list of tensors), so every tool checks the same function at the same point.
"""
from __future__ import annotations

import dataclasses

import numpy as np

IN, OUT, BATCH = 32, 10, 64


def n_params(hidden: int) -> int:
    return IN * hidden + hidden + hidden * hidden + hidden + hidden * OUT + OUT


def hidden_for(n: int) -> int:
    """The hidden width H whose MLP 32-H-H-10 has about `n` parameters."""
    # n = H² + 44H + 10
    return max(1, int(round((-44 + np.sqrt(44 ** 2 + 4 * (n - 10))) / 2)))


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    hidden: int
    weights: tuple[np.ndarray, ...]   # w1, b1, w2, b2, w3, b3 (float64)
    x: np.ndarray                      # (BATCH, IN)
    labels: np.ndarray                 # (BATCH,) int

    @property
    def n(self) -> int:
        return n_params(self.hidden)


def make(hidden: int, seed: int = 0) -> Model:
    rng = np.random.default_rng(seed)
    sizes = [(IN, hidden), (hidden, hidden), (hidden, OUT)]
    weights = []
    for fan_in, fan_out in sizes:
        weights.append(rng.normal(0, 1 / np.sqrt(fan_in), (fan_in, fan_out)))
        weights.append(rng.normal(0, 0.1, (fan_out,)))
    x = rng.normal(size=(BATCH, IN))
    labels = rng.integers(0, OUT, BATCH)
    return Model(hidden, tuple(weights), x, labels)


def jax_params(m: Model) -> dict:
    import jax.numpy as jnp
    names = ("w1", "b1", "w2", "b2", "w3", "b3")
    return {k: jnp.asarray(w) for k, w in zip(names, m.weights)}


def jax_loss(p, x, labels):
    import jax
    import jax.numpy as jnp
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    h = jnp.tanh(h @ p["w2"] + p["b2"])
    logits = h @ p["w3"] + p["b3"]
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def jax_flat_loss(m: Model):
    """The loss as a function of one flat float64 vector (for tools that need one)."""
    import jax.numpy as jnp
    shapes = [w.shape for w in m.weights]
    sizes = [w.size for w in m.weights]
    names = ("w1", "b1", "w2", "b2", "w3", "b3")
    x, labels = jnp.asarray(m.x), jnp.asarray(m.labels)

    def loss(theta):
        parts, start = {}, 0
        for name, shape, size in zip(names, shapes, sizes):
            parts[name] = theta[start:start + size].reshape(shape)
            start += size
        return jax_loss(parts, x, labels)

    return loss, np.concatenate([w.reshape(-1) for w in m.weights])


def torch_loss(m: Model):
    """(loss, tensors) for torch: loss(*tensors) with every weight requiring grad."""
    import torch
    x = torch.tensor(m.x, dtype=torch.float64)
    labels = torch.tensor(m.labels, dtype=torch.long)
    tensors = tuple(torch.tensor(w, dtype=torch.float64, requires_grad=True) for w in m.weights)

    def loss(w1, b1, w2, b2, w3, b3):
        h = torch.tanh(x @ w1 + b1)
        h = torch.tanh(h @ w2 + b2)
        return torch.nn.functional.cross_entropy(h @ w3 + b3, labels)

    return loss, tensors
