"""A hand-written backprop for `jaxcheck run` (see the guide, docs/guide/ci-pytest-cli.md).

    jaxcheck run examples/regression.py            # the correct backprop: exit status 0
    jaxcheck run examples/regression.py:buggy      # a planted bug in b[1]: exit status 1

The top-level names `loss_fn`, `params`, `args` and `grad_fn` are what `jaxcheck run FILE.py`
checks; `buggy` is a function returning them, for `jaxcheck run FILE.py:buggy`.
"""
import jax.numpy as jnp


def loss_fn(params, x, y):
    pred = jnp.tanh(x @ params["W"] + params["b"])
    return 0.5 * jnp.mean((pred - y) ** 2)


def grad_fn(params, x, y):
    pred = jnp.tanh(x @ params["W"] + params["b"])
    d = (pred - y) * (1 - pred**2) / y.size
    return {"W": x.T @ d, "b": d.sum(0)}


params = {"W": jnp.full((3, 2), 0.3), "b": jnp.zeros(2)}
args = (jnp.linspace(-1, 1, 12).reshape(4, 3), jnp.ones((4, 2)))


def buggy():
    def wrong_grad(params, x, y):
        g = grad_fn(params, x, y)
        return {"W": g["W"], "b": g["b"].at[1].multiply(1.01)}

    return {"loss_fn": loss_fn, "params": params, "args": args, "grad_fn": wrong_grad}
