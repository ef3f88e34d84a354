"""Fast mode on a ~1M-parameter float32 MLP: cost in loss evaluations and time.

    python bench/fast_mode_1m.py [--hidden 1024] [--repeats 3]

Prints, in one run: the time of one jitted forward+backward pass; the first fast-mode call
(compiles) and a repeated call (reuses the compiled functions, as a check every N training
steps would), both as seconds and as a ratio to the forward+backward pass; the number of loss
evaluations; and the same for a hand-written gradient with one entry off by 1%, with the
leaf and index fast mode reports.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxcheck


def problem(n_in: int, hidden: int, n_out: int, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes = [n_in, hidden, hidden, n_out]
    params = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"W{i}"] = jnp.asarray(rng.standard_normal((a, b)) / np.sqrt(a), jnp.float32)
        params[f"b{i}"] = jnp.asarray(0.1 * rng.standard_normal(b), jnp.float32)
    x = jnp.asarray(rng.standard_normal((batch, n_in)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((batch, n_out)), jnp.float32)

    def loss(p, x, y):
        h = x
        for i in range(3):
            h = h @ p[f"W{i}"] + p[f"b{i}"]
            if i < 2:
                h = jnp.tanh(h)
        return 0.5 * jnp.mean((h - y) ** 2)

    return loss, params, (x, y)


def timed(f, repeats=1):
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        out = f()
        jax.block_until_ready(jax.tree_util.tree_leaves(out) if not hasattr(out, "ok")
                              else [])
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    loss, params, args = problem(64, a.hidden, 10, 64)
    n = sum(x.size for x in jax.tree_util.tree_leaves(params))
    print(f"backend {jax.default_backend()}, {n:,} parameters")
    vg = jax.jit(jax.value_and_grad(loss))
    timed(lambda: vg(params, *args))
    t_fb, _ = timed(lambda: vg(params, *args), repeats=20)
    print(f"jitted forward+backward: {t_fb * 1e3:.2f} ms")

    grad = jax.jit(jax.grad(loss))
    g = grad(params, *args)["W1"]
    flat = int(np.argsort(np.abs(np.asarray(g)).ravel())[int(0.95 * g.size)])
    where = tuple(int(i) for i in np.unravel_index(flat, g.shape))

    def wrong(p, x, y):
        out = grad(p, x, y)
        return {**out, "W1": out["W1"].at[where].multiply(1.01)}

    for name, grad_fn in (("correct", None), (f"W1{list(where)} off by 1%", wrong)):
        def one(grad_fn=grad_fn):
            return jaxcheck.check(loss, params, *args, grad_fn=grad_fn, mode="fast")

        t_first, rep = timed(one)
        t_rep, rep = timed(one, repeats=a.repeats)
        print(f"[{name}] ok={rep.ok} failures={[f.location for f in rep.failures]} "
              f"evaluations={rep.info['evaluations']:,} (full mode: >= {2 * n + 1:,})")
        print(f"[{name}] first call {t_first:.2f} s ({t_first / t_fb:,.0f} x fwd+bwd), "
              f"repeated call {t_rep:.2f} s ({t_rep / t_fb:,.0f} x fwd+bwd)")


if __name__ == "__main__":
    main()
