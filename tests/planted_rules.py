"""float32 functions of JAX's own derivative rules, wrapped in `jax.custom_vjp` with planted bugs.

Each `Rule` is an op from `jax.nn`, `jax.scipy.special` or `jnp.linalg` on a small float32 input;
the loss is Σ w·op(x) with fixed weights w. `loss(rule, plant)` wraps the op in a custom_vjp
whose bwd is JAX's own VJP of the op, correct (`plant=None`) or with one planted error:

- `"scale"`: the whole gradient × (1 + 1e-4);
- `"entry"`: one entry (drawn among those with |gᵢ| at least the median) × (1 + 1e-3);
- `"shift"`: the VJP evaluated at the point x·(1 + 1e-3).

They are the errors a float64 check finds at once and that float32 central differences
(~1e-5 relative at their best step) missed.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.special as jss
import numpy as np

PLANTS = ("scale", "entry", "shift")
SCALE, ENTRY, SHIFT = 1e-4, 1e-3, 1e-3


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    op: Callable[[Any], Any]
    x: np.ndarray            # float32 input (the checked params)
    # a function homogeneous of degree 1 (norm, singular values, eigenvalues) has the same
    # gradient at x·(1 + δ): the "shift" plant is no error there
    plants: tuple[str, ...] = ("scale", "entry", "shift")


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(list(name.encode()))   # a seed per name, stable across runs


def _uniform(name, shape, lo, hi):
    return _rng(name).uniform(lo, hi, shape).astype(np.float32)


def _signed(name, shape, lo, hi):
    r = _rng(name)
    return (r.choice([-1.0, 1.0], shape) * r.uniform(lo, hi, shape)).astype(np.float32)


def _spd(name, n):
    a = _rng(name).standard_normal((n, n)).astype(np.float32) / np.sqrt(n)
    return (a @ a.T + np.eye(n, dtype=np.float32)).astype(np.float32)


def _rnn(x):
    """A scanned tanh RNN; x holds the recurrent weights (4×4) and the inputs (6×4)."""
    w, inputs = x[:4], x[4:]

    def step(h, xt):
        h = jnp.tanh(h @ w + xt)
        return h, h
    _, hs = jax.lax.scan(step, jnp.zeros(4, x.dtype), inputs)
    return hs


def _standardize(x):
    return (x - jnp.mean(x)) / jnp.sqrt(jnp.var(x) + 1e-5)


def _slogdet(x):
    sign, logabs = jnp.linalg.slogdet(x)
    return sign * logabs


def _div(x):
    return x[:6] / x[6:]


RULES: tuple[Rule, ...] = (
    Rule("logsumexp", lambda x: jax.nn.logsumexp(x, axis=-1), _signed("logsumexp", (3, 8), 0.2, 2)),
    Rule("standardize", _standardize, _signed("standardize", (12,), 0.2, 2)),
    Rule("svd_values", lambda x: jnp.linalg.svd(x, compute_uv=False),
         _signed("svd", (4, 3), 0.2, 1.5), ("scale", "entry")),
    Rule("gammaln", jss.gammaln, _uniform("gammaln", (10,), 0.3, 4)),
    Rule("log_ndtr", jss.log_ndtr, _signed("log_ndtr", (10,), 0.2, 3)),
    Rule("logit", jss.logit, _uniform("logit", (10,), 0.1, 0.9)),
    Rule("rnn_scan", _rnn, _signed("rnn", (10, 4), 0.1, 0.7)),
    Rule("exp2", jnp.exp2, _signed("exp2", (10,), 0.2, 2)),
    Rule("log", jnp.log, _uniform("log", (10,), 0.3, 3)),
    Rule("bessel_i0e", jss.i0e, _signed("i0e", (10,), 0.2, 3)),
    Rule("cbrt", jnp.cbrt, _signed("cbrt", (10,), 0.2, 3)),
    Rule("slogdet", _slogdet, _spd("slogdet", 4)),
    Rule("ndtri", jss.ndtri, _uniform("ndtri", (10,), 0.05, 0.95)),
    Rule("log1p", jnp.log1p, _uniform("log1p", (10,), 0.1, 3)),
    Rule("acos", jnp.arccos, _signed("acos", (10,), 0.1, 0.9)),
    Rule("erf", jss.erf, _signed("erf", (10,), 0.1, 2)),
    Rule("erf_inv", jss.erfinv, _signed("erfinv", (10,), 0.1, 0.9)),
    Rule("logistic", jax.nn.sigmoid, _signed("logistic", (10,), 0.2, 3)),
    Rule("div", _div, _signed("div", (12,), 0.3, 2)),
    Rule("softplus", jax.nn.softplus, _signed("softplus", (10,), 0.2, 3)),
    Rule("cholesky", jnp.linalg.cholesky, _spd("cholesky", 4)),
    # more of our own
    Rule("log_softmax", lambda x: jax.nn.log_softmax(x, axis=-1), _signed("lsm", (3, 6), 0.2, 2)),
    Rule("gelu", jax.nn.gelu, _signed("gelu", (10,), 0.2, 3)),
    Rule("silu", jax.nn.silu, _signed("silu", (10,), 0.2, 3)),
    Rule("tanh", jnp.tanh, _signed("tanh", (10,), 0.1, 2)),
    Rule("digamma", jss.digamma, _uniform("digamma", (10,), 0.5, 4)),
    Rule("xlogy", lambda x: jss.xlogy(x[:5], x[5:]), _uniform("xlogy", (10,), 0.2, 3)),
    Rule("inv", jnp.linalg.inv, _spd("inv", 3)),
    Rule("det", jnp.linalg.det, _spd("det", 3)),
    Rule("solve", lambda x: jnp.linalg.solve(x[:3], x[3]), np.concatenate(
        [_spd("solve", 3), _signed("solve_b", (1, 3), 0.3, 1.5)]).astype(np.float32)),
    Rule("eigh_values", lambda x: jnp.linalg.eigvalsh(x + x.T), _signed("eigh", (4, 4), 0.1, 1),
         ("scale", "entry")),
    Rule("norm", jnp.linalg.norm, _signed("norm", (10,), 0.2, 2),
         ("scale", "entry")),
    Rule("sinh", jnp.sinh, _signed("sinh", (10,), 0.2, 2)),
    Rule("atan2", lambda x: jnp.arctan2(x[:5], x[5:]), _signed("atan2", (10,), 0.2, 2)),
    Rule("expm1", jnp.expm1, _signed("expm1", (10,), 0.1, 2)),
    Rule("rsqrt", jax.lax.rsqrt, _uniform("rsqrt", (10,), 0.3, 3)),
)


def weights(rule: Rule) -> np.ndarray:
    """The fixed weights w of the loss Σ w·op(x), in [0.5, 1.5] with random signs."""
    shape = jax.eval_shape(rule.op, jax.ShapeDtypeStruct(rule.x.shape, jnp.float32)).shape
    return _signed(rule.name + "/w", shape, 0.5, 1.5)


def planted_entry(rule: Rule) -> int:
    """The flat index the `"entry"` plant changes: drawn among |gᵢ| ≥ median, gᵢ ≠ 0."""
    g = np.abs(np.asarray(jax.grad(loss(rule, None))(jnp.asarray(rule.x)))).ravel()
    candidates = np.flatnonzero((g >= np.median(g)) & (g > 0))
    return int(_rng(rule.name + "/entry").choice(candidates))


def loss(rule: Rule, plant: str | None) -> Callable[[Any], Any]:
    """Σ w·op(x) with op wrapped in a custom_vjp whose bwd is correct or carries `plant`."""
    w = jnp.asarray(weights(rule))
    index = planted_entry(rule) if plant == "entry" else None

    @jax.custom_vjp
    def op(x):
        return rule.op(x)

    def fwd(x):
        return rule.op(x), x

    def bwd(x, ct):
        if plant == "shift":
            x = x * (1 + SHIFT)
        (g,) = jax.vjp(rule.op, x)[1](ct)
        if plant == "scale":
            g = g * (1 + SCALE)
        if plant == "entry":
            g = g.reshape(-1).at[index].multiply(1 + ENTRY).reshape(g.shape)
        return (g,)

    op.defvjp(fwd, bwd)
    return lambda x: jnp.sum(w * op(x))
