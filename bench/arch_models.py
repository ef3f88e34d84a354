"""The benchmark's architectures: small CNNs and transformer blocks, in JAX and in torch.

Each model is built once as float64 numpy weights and data; `jax_loss` and the torch module
(`TorchCNN`, `TorchBlock`) compute the same loss from them (weights copied), so every tool
checks the same function at the same point. `equal_losses` asserts it to 1e-14.

- CNN: NCHW images 3×14×14, conv 3×3 3→c₁ (tanh), 2×2 average pool, conv 3×3 c₁→c₂ (tanh),
  dense c₂·7·7→10, softmax cross-entropy. c = (8, 16): n = 9,242; (16, 48): n = 30,938.
- Transformer block: token and position embeddings (vocabulary 64, 14 positions), pre-norm
  causal self-attention (4 heads, no biases), pre-norm MLP d→2d→d (GELU), output tied to the
  token embedding, next-token cross-entropy. d = 32: n = 10,912; d = 64: n = 38,208.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

VOCAB, POSITIONS, HEADS, IMAGE, CLASSES = 64, 14, 4, 14, 10
LN_EPS = 1e-5
MASKED = -1e9  # causal mask: a finite value, the same in both frameworks


@dataclasses.dataclass(frozen=True, eq=False)
class Arch:
    name: str
    kind: str                          # "cnn" or "transformer"
    weights: dict[str, np.ndarray]     # float64, in the layout of both frameworks
    x: np.ndarray                      # images (B, 3, 14, 14) or tokens (B, 14)
    labels: np.ndarray                 # classes (B,) or next tokens (B, 14)

    @property
    def n(self) -> int:
        return int(sum(w.size for w in self.weights.values()))


def cnn(channels: tuple[int, int], batch: int = 16, seed: int = 0) -> Arch:
    rng = np.random.default_rng(seed)
    c1, c2 = channels

    def conv(cin, cout):
        return rng.normal(0, 1 / math.sqrt(9 * cin), (cout, cin, 3, 3)), rng.normal(0, 0.1, cout)

    w1, b1 = conv(3, c1)
    w2, b2 = conv(c1, c2)
    side = IMAGE // 2
    w3 = rng.normal(0, 1 / math.sqrt(c2 * side * side), (c2 * side * side, CLASSES))
    b3 = rng.normal(0, 0.1, CLASSES)
    weights = {"conv1_w": w1, "conv1_b": b1, "conv2_w": w2, "conv2_b": b2, "dense_w": w3,
               "dense_b": b3}
    x = rng.normal(size=(batch, 3, IMAGE, IMAGE))
    labels = rng.integers(0, CLASSES, batch)
    return Arch(f"CNN (conv 3→{c1}→{c2}, dense)", "cnn", weights, x, labels)


def transformer(d: int, batch: int = 8, seed: int = 0) -> Arch:
    rng = np.random.default_rng(seed)
    weights = {"tok": rng.normal(0, 0.2, (VOCAB, d)), "pos": rng.normal(0, 0.1, (POSITIONS, d))}
    for name in ("ln1", "ln2"):
        weights[name + "_g"] = 1 + rng.normal(0, 0.1, d)
        weights[name + "_b"] = rng.normal(0, 0.1, d)
    for name in ("wq", "wk", "wv", "wo"):
        weights[name] = rng.normal(0, 1 / math.sqrt(d), (d, d))
    weights["mlp_w1"] = rng.normal(0, 1 / math.sqrt(d), (d, 2 * d))
    weights["mlp_b1"] = rng.normal(0, 0.1, 2 * d)
    weights["mlp_w2"] = rng.normal(0, 1 / math.sqrt(2 * d), (2 * d, d))
    weights["mlp_b2"] = rng.normal(0, 0.1, d)
    tokens = rng.integers(0, VOCAB, (batch, POSITIONS + 1))
    return Arch(f"transformer block, d={d}", "transformer", weights, tokens[:, :-1],
                tokens[:, 1:])


def all_models(quick: bool = False) -> list[Arch]:
    """The four models of record (issue 20), or tiny ones with the same code paths."""
    if quick:
        return [cnn((2, 3), batch=2), transformer(8, batch=2)]
    return [cnn((8, 16)), transformer(32), cnn((16, 48)), transformer(64)]


# ---------------------------------------------------------------- JAX


def jax_params(m: Arch) -> dict:
    import jax.numpy as jnp
    return {k: jnp.asarray(w) for k, w in m.weights.items()}


def jax_args(m: Arch) -> tuple:
    import jax.numpy as jnp
    return jnp.asarray(m.x), jnp.asarray(m.labels)


def _cross_entropy(logits, labels):
    import jax
    import jax.numpy as jnp
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], axis=-1))


def jax_cnn_loss(p, x, labels):
    import jax
    import jax.numpy as jnp

    def conv(h, w, b):
        out = jax.lax.conv_general_dilated(h, w, (1, 1), "SAME",
                                           dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return jnp.tanh(out + b[None, :, None, None])

    h = conv(x, p["conv1_w"], p["conv1_b"])
    b, c, s, _ = h.shape
    h = h.reshape(b, c, s // 2, 2, s // 2, 2).mean(axis=(3, 5))
    h = conv(h, p["conv2_w"], p["conv2_b"])
    return _cross_entropy(h.reshape(b, -1) @ p["dense_w"] + p["dense_b"], labels)


def _layer_norm(h, g, b):
    import jax.numpy as jnp
    mean = jnp.mean(h, axis=-1, keepdims=True)
    var = jnp.mean((h - mean) ** 2, axis=-1, keepdims=True)
    return (h - mean) / jnp.sqrt(var + LN_EPS) * g + b


def jax_transformer_loss(p, tokens, labels):
    import jax
    import jax.numpy as jnp
    batch, t = tokens.shape
    d = p["tok"].shape[1]
    h = p["tok"][tokens] + p["pos"][None, :t]
    a = _layer_norm(h, p["ln1_g"], p["ln1_b"])

    def heads(z):
        return z.reshape(batch, t, HEADS, d // HEADS).transpose(0, 2, 1, 3)

    q, k, v = heads(a @ p["wq"]), heads(a @ p["wk"]), heads(a @ p["wv"])
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d // HEADS)
    causal = jnp.tril(jnp.ones((t, t), bool))
    weights = jax.nn.softmax(jnp.where(causal, scores, MASKED), axis=-1)
    h = h + (weights @ v).transpose(0, 2, 1, 3).reshape(batch, t, d) @ p["wo"]
    a = _layer_norm(h, p["ln2_g"], p["ln2_b"])
    h = h + jax.nn.gelu(a @ p["mlp_w1"] + p["mlp_b1"], approximate=True) @ p["mlp_w2"] \
        + p["mlp_b2"]
    return _cross_entropy(h @ p["tok"].T, labels)


def jax_loss(m: Arch):
    return jax_cnn_loss if m.kind == "cnn" else jax_transformer_loss


# ---------------------------------------------------------------- torch


def torch_module(m: Arch):
    """The torch module of the same architecture, with `m`'s weights copied into it."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class TorchCNN(nn.Module):
        def __init__(self, c1, c2):
            super().__init__()
            self.conv1 = nn.Conv2d(3, c1, 3, padding=1, dtype=torch.float64)
            self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, dtype=torch.float64)
            side = IMAGE // 2
            self.dense = nn.Linear(c2 * side * side, CLASSES, dtype=torch.float64)

        def forward(self, x, labels):
            h = F.avg_pool2d(torch.tanh(self.conv1(x)), 2)
            h = torch.tanh(self.conv2(h))
            return F.cross_entropy(self.dense(h.flatten(1)), labels)

    class TorchBlock(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.tok = nn.Embedding(VOCAB, d, dtype=torch.float64)
            self.pos = nn.Parameter(torch.zeros(POSITIONS, d, dtype=torch.float64))
            self.ln1 = nn.LayerNorm(d, eps=LN_EPS, dtype=torch.float64)
            self.ln2 = nn.LayerNorm(d, eps=LN_EPS, dtype=torch.float64)
            self.wq, self.wk, self.wv, self.wo = (
                nn.Linear(d, d, bias=False, dtype=torch.float64) for _ in range(4))
            self.mlp1 = nn.Linear(d, 2 * d, dtype=torch.float64)
            self.mlp2 = nn.Linear(2 * d, d, dtype=torch.float64)

        def forward(self, tokens, labels):
            batch, t = tokens.shape
            d = self.tok.weight.shape[1]
            h = self.tok(tokens) + self.pos[None, :t]
            a = self.ln1(h)

            def heads(z):
                return z.reshape(batch, t, HEADS, d // HEADS).transpose(1, 2)

            q, k, v = heads(self.wq(a)), heads(self.wk(a)), heads(self.wv(a))
            scores = q @ k.transpose(-1, -2) / math.sqrt(d // HEADS)
            causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
            weights = torch.softmax(torch.where(causal, scores, MASKED), dim=-1)
            h = h + self.wo((weights @ v).transpose(1, 2).reshape(batch, t, d))
            h = h + self.mlp2(F.gelu(self.mlp1(self.ln2(h)), approximate="tanh"))
            logits = h @ self.tok.weight.T
            return F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1))

    w = m.weights
    if m.kind == "cnn":
        module = TorchCNN(w["conv1_w"].shape[0], w["conv2_w"].shape[0])
        # torch's Linear keeps (out, in): the transpose of the JAX layout
        copied = {"conv1.weight": w["conv1_w"], "conv1.bias": w["conv1_b"],
                  "conv2.weight": w["conv2_w"], "conv2.bias": w["conv2_b"],
                  "dense.weight": w["dense_w"].T, "dense.bias": w["dense_b"]}
    else:
        module = TorchBlock(w["tok"].shape[1])
        copied = {"tok.weight": w["tok"], "pos": w["pos"],
                  "ln1.weight": w["ln1_g"], "ln1.bias": w["ln1_b"],
                  "ln2.weight": w["ln2_g"], "ln2.bias": w["ln2_b"],
                  "wq.weight": w["wq"].T, "wk.weight": w["wk"].T, "wv.weight": w["wv"].T,
                  "wo.weight": w["wo"].T, "mlp1.weight": w["mlp_w1"].T,
                  "mlp1.bias": w["mlp_b1"], "mlp2.weight": w["mlp_w2"].T,
                  "mlp2.bias": w["mlp_b2"]}
    module.load_state_dict({k: torch.tensor(np.ascontiguousarray(v)) for k, v in copied.items()})
    return module


def torch_loss(m: Arch):
    """(loss, tensors) for `torch.autograd.gradcheck`: the module's loss as a function of its
    parameters (`torch.func.functional_call`), every one requiring grad."""
    import torch
    module = torch_module(m)
    names = [name for name, _ in module.named_parameters()]
    tensors = tuple(p.detach().clone().requires_grad_(True) for p in module.parameters())
    x = torch.tensor(m.x, dtype=torch.float64 if m.kind == "cnn" else torch.long)
    labels = torch.tensor(m.labels, dtype=torch.long)

    def loss(*params):
        return torch.func.functional_call(module, dict(zip(names, params)), (x, labels))

    return loss, tensors


def equal_losses(m: Arch, tolerance: float = 1e-14) -> tuple[float, float]:
    """The JAX and torch losses at `m`'s weights, asserted equal within `tolerance`
    (relative to max(1, |loss|)): the two frameworks check the same function."""
    import jax
    with jax.enable_x64(True):
        ours = float(jax_loss(m)(jax_params(m), *jax_args(m)))
    loss, tensors = torch_loss(m)
    theirs = float(loss(*tensors).detach())
    assert abs(ours - theirs) <= tolerance * max(1.0, abs(ours)), (m.name, ours, theirs)
    return ours, theirs
