"""Example Pallas kernels with hand-written backward passes, and plain references.

Not part of jaxcheck: the material of `tests/test_pallas.py` and `notebooks/04_kernels.ipynb`.
A small classifier whose two fused stages are Pallas kernels wrapped in `jax.custom_vjp`:

    h = tanh(x @ W_in)                      plain JAX
    z = layer_norm(h) * gamma + beta        Pallas forward and backward, one row block each
    loss = mean softmax_cross_entropy(z @ W, labels)
                                            Pallas forward and backward (fused linear + CE)

Every kernel runs with `interpret=True`, so on a CPU too. `model_loss(bug)` builds the loss with
one planted backward bug, each in one kernel and each hitting one leaf:

- `"dropped_term"`: layer norm's dx without the `xhat * mean(dxhat * xhat)` term (only the
  gradient reaching `W_in` is wrong);
- `"wrong_scale"`: layer norm's dgamma times `D / (D - 1)` (an n vs n - 1 slip; only `gamma`);
- `"transposed_block"`: the cross-entropy kernel's dW with its top-left 4x4 block transposed
  (only the off-diagonal entries of that block of `W`).

and one forward bug, `"wrong_epsilon"`: the layer norm's forward adds 1e-3 to the variance
instead of 1e-5; its backward, built on the forward's residuals, is the exact derivative of
that wrong forward. Bugs combine: `model_loss(("wrong_epsilon", "transposed_block"))`.

`reference_loss` is the same loss written with `jax.nn`, which runs in float64.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

ROWS = 4            # rows per kernel program (the grid runs over blocks of rows)
LN_EPS = 1e-5
BUGS = ("dropped_term", "wrong_scale", "transposed_block")
FORWARD_BUGS = ("wrong_epsilon",)
WRONG_EPS = 1e-3    # "wrong_epsilon": the layer norm's forward adds 1e-3, not 1e-5
BLOCK = 4           # the transposed block of W: W[:BLOCK, :BLOCK]


def _row_blocks(n: int) -> tuple[int, ...]:
    assert n % ROWS == 0, f"batch size {n} must be a multiple of {ROWS}"
    return (n // ROWS,)


def _rows(width: int) -> pl.BlockSpec:
    """Block i of an (n, width) array: rows [i * ROWS, (i + 1) * ROWS)."""
    return pl.BlockSpec((ROWS, width), lambda i: (i, 0))


def _whole(shape: tuple[int, ...]) -> pl.BlockSpec:
    return pl.BlockSpec(shape, lambda i: (0,) * len(shape))


def _per_block(shape: tuple[int, ...]) -> pl.BlockSpec:
    """Program i writes entry i of a (programs, *shape) array of partial sums."""
    return pl.BlockSpec((1, *shape), lambda i: (i,) + (0,) * len(shape))


# ------------------------------------------------------------------------------ layer norm


def _ln_forward_kernel(eps, h_ref, gamma_ref, beta_ref, z_ref, xhat_ref, rstd_ref):
    h = h_ref[...]
    mean = jnp.mean(h, axis=1, keepdims=True)
    centred = h - mean
    rstd = jax.lax.rsqrt(jnp.mean(centred * centred, axis=1, keepdims=True) + eps)
    xhat = centred * rstd
    z_ref[...] = xhat * gamma_ref[...] + beta_ref[...]
    xhat_ref[...] = xhat
    rstd_ref[...] = rstd


def _ln_backward_kernel(bugs, dz_ref, xhat_ref, rstd_ref, gamma_ref, dh_ref, dgamma_ref,
                        dbeta_ref):
    dz, xhat, rstd = dz_ref[...], xhat_ref[...], rstd_ref[...]
    d = xhat.shape[1]
    dxhat = dz * gamma_ref[...]
    mean_dxhat = jnp.mean(dxhat, axis=1, keepdims=True)
    mean_dxhat_xhat = jnp.mean(dxhat * xhat, axis=1, keepdims=True)
    if "dropped_term" in bugs:
        dh_ref[...] = rstd * (dxhat - mean_dxhat)
    else:
        dh_ref[...] = rstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)
    dgamma = jnp.sum(dz * xhat, axis=0, keepdims=True)
    if "wrong_scale" in bugs:
        dgamma = dgamma * (d / (d - 1))
    dgamma_ref[...] = dgamma[None]
    dbeta_ref[...] = jnp.sum(dz, axis=0, keepdims=True)[None]


def _ln_forward(bugs, h, gamma, beta):
    n, d = h.shape
    eps = WRONG_EPS if "wrong_epsilon" in bugs else LN_EPS
    z, xhat, rstd = pl.pallas_call(
        functools.partial(_ln_forward_kernel, eps), grid=_row_blocks(n),
        in_specs=[_rows(d), _whole((1, d)), _whole((1, d))],
        out_specs=[_rows(d), _rows(d), _rows(1)],
        out_shape=[jax.ShapeDtypeStruct((n, d), h.dtype)] * 2
        + [jax.ShapeDtypeStruct((n, 1), h.dtype)],
        interpret=True,
    )(h, gamma[None], beta[None])
    return z, (xhat, rstd, gamma)


def _ln_backward(bugs, residuals, dz):
    xhat, rstd, gamma = residuals
    n, d = xhat.shape
    programs = _row_blocks(n)[0]
    dh, dgamma, dbeta = pl.pallas_call(
        functools.partial(_ln_backward_kernel, bugs), grid=(programs,),
        in_specs=[_rows(d), _rows(d), _rows(1), _whole((1, d))],
        out_specs=[_rows(d), _per_block((1, d)), _per_block((1, d))],
        out_shape=[jax.ShapeDtypeStruct((n, d), dz.dtype)]
        + [jax.ShapeDtypeStruct((programs, 1, d), dz.dtype)] * 2,
        interpret=True,
    )(dz, xhat, rstd, gamma[None])
    return dh, dgamma.sum(axis=(0, 1)), dbeta.sum(axis=(0, 1))


def layer_norm(bugs: tuple[str, ...] = ()):
    """Row-wise layer norm `(h, gamma, beta) -> z` with Pallas forward and backward."""

    @jax.custom_vjp
    def ln(h, gamma, beta):
        return _ln_forward(bugs, h, gamma, beta)[0]

    ln.defvjp(functools.partial(_ln_forward, bugs), functools.partial(_ln_backward, bugs))
    return ln


# ------------------------------------------------------------- fused linear + cross-entropy


def _ce_forward_kernel(h_ref, w_ref, labels_ref, loss_ref, p_ref):
    logits = jnp.dot(h_ref[...], w_ref[...])
    top = jnp.max(logits, axis=1, keepdims=True)
    e = jnp.exp(logits - top)
    total = jnp.sum(e, axis=1, keepdims=True)
    classes = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 1)
    picked = jnp.sum(jnp.where(classes == labels_ref[...], logits, 0.0), axis=1,
                     keepdims=True)
    loss_ref[...] = top + jnp.log(total) - picked
    p_ref[...] = e / total                      # softmax, kept for the backward pass


def _ce_backward_kernel(bugs, scale_ref, p_ref, labels_ref, h_ref, w_ref, dh_ref, dw_ref):
    p = p_ref[...]
    classes = jax.lax.broadcasted_iota(jnp.int32, p.shape, 1)
    dlogits = (p - (classes == labels_ref[...]).astype(p.dtype)) * scale_ref[...]
    dh_ref[...] = jnp.dot(dlogits, w_ref[...].T)
    dw = jnp.dot(h_ref[...].T, dlogits)
    if "transposed_block" in bugs:
        dw = dw.at[:BLOCK, :BLOCK].set(dw[:BLOCK, :BLOCK].T)
    dw_ref[...] = dw[None]


def _ce_forward(h, w, labels):
    n, d = h.shape
    c = w.shape[1]
    losses, p = pl.pallas_call(
        _ce_forward_kernel, grid=_row_blocks(n),
        in_specs=[_rows(d), _whole((d, c)), _rows(1)],
        out_specs=[_rows(1), _rows(c)],
        out_shape=[jax.ShapeDtypeStruct((n, 1), h.dtype),
                   jax.ShapeDtypeStruct((n, c), h.dtype)],
        interpret=True,
    )(h, w, labels[:, None])
    return jnp.mean(losses), (p, labels, h, w)


def _ce_backward(bugs, residuals, g):
    p, labels, h, w = residuals
    n, d = h.shape
    c = w.shape[1]
    programs = _row_blocks(n)[0]
    scale = jnp.reshape(g / n, (1, 1)).astype(h.dtype)   # d mean / d loss_i, times g
    dh, dw = pl.pallas_call(
        functools.partial(_ce_backward_kernel, bugs), grid=(programs,),
        in_specs=[_whole((1, 1)), _rows(c), _rows(1), _rows(d), _whole((d, c))],
        out_specs=[_rows(d), _per_block((d, c))],
        out_shape=[jax.ShapeDtypeStruct((n, d), h.dtype),
                   jax.ShapeDtypeStruct((programs, d, c), h.dtype)],
        interpret=True,
    )(scale, p, labels[:, None], h, w)
    return dh, dw.sum(axis=0), None             # labels are integers: no cotangent


def linear_cross_entropy(bugs: tuple[str, ...] = ()):
    """`(h, W, labels) -> mean_i CE(softmax(h @ W)_i, labels_i)`, fused, Pallas both ways."""

    @jax.custom_vjp
    def ce(h, w, labels):
        return _ce_forward(h, w, labels)[0]

    ce.defvjp(_ce_forward, functools.partial(_ce_backward, bugs))
    return ce


# ---------------------------------------------------------------------------- the model


def model_loss(bug: str | tuple[str, ...] | None = None):
    """The classifier's loss `loss(params, x, labels)` through the kernels, with `bug` (one
    of `BUGS` or `FORWARD_BUGS`, or a tuple of them) planted, or none."""
    bugs = () if bug is None else (bug,) if isinstance(bug, str) else tuple(bug)
    unknown = [b for b in bugs if b not in BUGS + FORWARD_BUGS]
    if unknown:
        raise ValueError(f"bug: expected None or some of {BUGS + FORWARD_BUGS}, got {bug!r}")
    ln, ce = layer_norm(bugs), linear_cross_entropy(bugs)

    def loss(params, x, labels):
        h = jnp.tanh(x @ params["W_in"])
        return ce(ln(h, params["gamma"], params["beta"]), params["W"], labels)

    return loss


def reference_loss(params, x, labels):
    """The same loss written plainly with `jax.nn`: runs in any precision, float64 included."""
    h = jnp.tanh(x @ params["W_in"])
    mean = jnp.mean(h, axis=1, keepdims=True)
    var = jnp.mean((h - mean) ** 2, axis=1, keepdims=True)
    z = (h - mean) / jnp.sqrt(var + LN_EPS) * params["gamma"] + params["beta"]
    logits = z @ params["W"]
    picked = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked)


def example(batch: int = 8, d_in: int = 4, d: int = 8, classes: int = 8, seed: int = 0):
    """float32 `(params, x, labels)` for the classifier: random, reproducible."""
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=1.0):
        return jnp.asarray(scale * rng.standard_normal(shape), jnp.float32)

    params = {"W_in": normal(d_in, d), "gamma": 1.0 + normal(d, scale=0.2),
              "beta": normal(d, scale=0.2), "W": normal(d, classes, scale=0.5)}
    return params, normal(batch, d_in), jnp.asarray(rng.integers(0, classes, batch), jnp.int32)
