"""A small model whose params are sharded over 8 (forced) CPU devices, FSDP- and tensor-
parallel-style, for the sharding tests (run in subprocesses that set XLA_FLAGS first)."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

# mesh shape, axis names, specs of the params and of the data
LAYOUTS = {
    "fsdp8": ((8,), ("fsdp",),
              {"w1": P("fsdp", None), "b1": P(None), "w2": P("fsdp", None), "g": P()},
              P()),
    "tp2x4": ((2, 4), ("data", "model"),
              {"w1": P(None, "model"), "b1": P("model"), "w2": P("model", None), "g": P()},
              P("data", None)),
}


def params_and_data():
    rng = np.random.default_rng(0)
    params = {"w1": rng.normal(size=(16, 32)) / 4, "b1": 0.1 * rng.normal(size=32),
              "w2": rng.normal(size=(32, 8)) / 6, "g": np.ones(8)}
    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    x = jnp.asarray(rng.normal(size=(8, 16)), jnp.float32)
    return params, x


def loss(p, x):
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    z = h @ p["w2"]
    z = (z - z.mean(-1, keepdims=True)) * jax.lax.rsqrt(z.var(-1, keepdims=True) + 1e-5)
    return jnp.mean(jax.nn.logsumexp(z * p["g"], axis=-1)) + 1e-3 * jnp.sum(p["w1"] ** 2)


def wrong_grad(p, x):
    """One entry of w2's gradient off by 1%: sharded along the model/fsdp axis."""
    g = jax.grad(loss)(p, x)
    return {**g, "w2": g["w2"].at[20, 3].multiply(1.01)}


def sharded(layout, params, x):
    shape, names, specs, data_spec = LAYOUTS[layout]
    mesh = jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape))
    put = {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in params.items()}
    return put, jax.device_put(x, NamedSharding(mesh, data_spec))
