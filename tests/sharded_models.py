"""A small model whose params are sharded over 8 (forced) CPU devices, FSDP- and tensor-
parallel-style, for the sharding tests (run in subprocesses that set XLA_FLAGS first)."""
import json
import os
import socket
import subprocess
import sys

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
    # JAX's default: `Explicit` axes (shardings in the types; checked under jax.set_mesh)
    "explicit2x4": ((2, 4), ("data", "model"),
                    {"w1": P(None, "model"), "b1": P("model"), "w2": P("model", None),
                     "g": P()},
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
    # under a mesh of `Explicit` axes a product over a sharded dimension names its output
    # sharding (replicated); elsewhere this is a plain product
    explicit = not jax.sharding.get_abstract_mesh().empty
    z = jnp.matmul(h, p["w2"], out_sharding=P(None, None) if explicit else None)
    z = (z - z.mean(-1, keepdims=True)) * jax.lax.rsqrt(z.var(-1, keepdims=True) + 1e-5)
    return jnp.mean(jax.nn.logsumexp(z * p["g"], axis=-1)) + 1e-3 * jnp.sum(p["w1"] ** 2)


def wrong_grad(p, x):
    """One entry of w2's gradient off by 1%: sharded along the model/fsdp axis."""
    g = jax.grad(loss)(p, x)
    rows, cols = (jax.lax.broadcasted_iota(jnp.int32, g["w2"].shape, a) for a in (0, 1))
    return {**g, "w2": g["w2"] * jnp.where((rows == 20) & (cols == 3), 1.01, 1.0)}


def mesh_of(layout):
    shape, names, _, _ = LAYOUTS[layout]
    if layout.startswith("explicit"):
        return jax.make_mesh(shape, names)  # JAX's default axis types: Explicit
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape))


def sharded(layout, params, x):
    _, _, specs, data_spec = LAYOUTS[layout]
    mesh = mesh_of(layout)
    put = {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in params.items()}
    return put, jax.device_put(x, NamedSharding(mesh, data_spec))


TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


def _env(devices: int) -> dict:
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
            "PYTHONPATH": os.pathsep.join([TESTS, ROOT, os.environ.get("PYTHONPATH", "")])}


def run_on_devices(script: str, devices: int = 8) -> dict:
    """Run `script` in a fresh process with `devices` forced CPU devices (set before JAX is
    imported); return the JSON it prints last."""
    run = subprocess.run([sys.executable, "-c", script], env=_env(devices),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(script: str, processes: int = 2, devices: int = 2,
                  timeout: float = 300) -> list[tuple[int, str, str]]:
    """Run `script` as `processes` processes of one jax.distributed job on 127.0.0.1 (each
    gets its process id and the coordinator's port as argv[1:3]), within `timeout` seconds,
    and always clean them up. Returns (exit code, stdout, stderr) per process."""
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i), port], env=_env(devices),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(processes)]
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:  # never leave a process behind, whatever happened
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]
