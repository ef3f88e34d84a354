"""The least a full check of the benchmark's transformer blocks evaluates, per point and in all.

    python bench/transformer_floor.py          # d = 32 and d = 64 (about a minute)

An entry of the blocks' token or position table, layer norms or attention weights changes the
input of the MLP's GELU in every row and feature of a sequence it reaches, so an exact
evaluation of its loss computes at least the tail from the GELU on: the GELU, the MLP's second
product, the tied output product and the loss. This times that tail alone (vmapped, float64,
best of 5 at batches of 64 and 256), and multiplies its best time by the full check's points
of the entries before the MLP, the token table's excepted (two per entry); beside it the
training step's first call, `jax.jit(jax.value_and_grad(loss))`, which issue 20's first-call
figure allows 4× of. No compilation, no other leaf and no host work is counted: the figures
are lower bounds of a full check's evaluations.
"""
from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import arch_models  # noqa: E402
import jax  # noqa: E402

BEFORE_THE_MLP = ("pos", "ln1_g", "ln1_b", "wq", "wk", "wv", "wo", "ln2_g", "ln2_b")


def floor(d: int) -> dict:
    m = arch_models.transformer(d)
    p, (tokens, labels) = arch_models.jax_params(m), arch_models.jax_args(m)
    batch, length = tokens.shape
    h0 = jax.random.normal(jax.random.key(1), (batch, length, d))

    def tail(u):   # u: the GELU's input
        h = h0 + jax.nn.gelu(u, approximate=True) @ p["mlp_w2"] + p["mlp_b2"]
        return arch_models._cross_entropy(h @ p["tok"].T, labels)

    best = float("inf")
    for size in (64, 256):
        us = jax.random.normal(jax.random.key(0), (size, batch, length, 2 * d))
        f = jax.jit(jax.vmap(tail))
        f(us).block_until_ready()
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(4):
                f(us).block_until_ready()
            best = min(best, (time.perf_counter() - start) / 4 / size)
    loss = arch_models.jax_loss(m)
    jax.clear_caches()
    start = time.perf_counter()
    jax.block_until_ready(jax.jit(jax.value_and_grad(loss))(p, tokens, labels))
    step = time.perf_counter() - start
    points = 2 * sum(int(p[k].size) for k in BEFORE_THE_MLP)
    return {"d": d, "tail": best, "points": points, "bound": best * points, "step": step}


def main() -> int:
    with jax.enable_x64(True):
        for d in (32, 64):
            r = floor(d)
            print(f"d={r['d']}: the tail from the GELU on {r['tail'] * 1e6:.1f} us a point; "
                  f"{r['points']:,} points before the MLP (the token table excepted): at "
                  f"least {r['bound']:.2f} s; the training step's first call {r['step']:.2f} s "
                  f"(4x: {4 * r['step']:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
