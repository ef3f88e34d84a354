"""The sharded path: perturbation batches split over 4 (forced) CPU devices."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np
import jaxcheck
from jaxcheck.evaluation import engine
from jaxcheck.inputs import pytree
from jaxcheck.inputs.problem import Problem

def loss(p, x):
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    return jnp.sum(jax.nn.relu(h @ p["w2"]) ** 2) + 0.1 * jnp.sum(p["b1"] ** 2)

rng = np.random.default_rng(0)
params = {"w1": jnp.asarray(rng.normal(size=(3, 6))), "b1": jnp.zeros(6),
          "w2": jnp.asarray(rng.normal(size=(6, 5)))}
x = jnp.asarray(rng.normal(size=(4, 3)))

def wrong(p, x):
    g = jax.grad(loss)(p, x)
    return {**g, "w2": g["w2"].at[4, 1].add(1e-3)}

out = {"devices": jax.device_count()}
for local in (False, True):  # each entry's change followed through the loss, or not
    engine.LOCAL_CHANGES_MIN_SIZE = 1 if local else 10**9
    engine.clear_cache()
    for name, grad_fn in (("right", None), ("wrong", wrong)):
        rep = jaxcheck.check(loss, params, x, grad_fn=grad_fn, batch_size=8)
        out[name + ("_local" if local else "")] = {
            "ok": rep.ok, "status": [leaf.status.tolist() for leaf in rep.leaves],
            "failures": [[f.path, list(f.index)] for f in rep.failures]}

# Where a batch's results live: one slice per device.
with jax.enable_x64(True):
    p = pytree.split(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params))
    a = pytree.split((x.astype(jnp.float64),), check_floats=False)
    problem = Problem(loss, p.structure, a.structure)
    shared = (tuple(p.dynamic), tuple(a.dynamic))
    plan = engine.program(engine.EntryLoss(problem, p.checked[0]), shared, 8)
    res = plan(plan.place_shared(shared), [np.arange(8, dtype=np.int32), np.zeros(8)])
    out["batch"] = plan.batch
    out["shards"] = sorted(s.data.shape[0] for s in res.addressable_shards)
    out["result_devices"] = len(res.sharding.device_set)
print("RESULT " + json.dumps(out))
"""


def run_on(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={devices}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def one_and_four():
    return run_on(1), run_on(4)


def test_four_devices_give_the_verdicts_of_one(one_and_four):
    one, four = one_and_four
    assert (one["devices"], four["devices"]) == (1, 4)
    assert one["right"] == four["right"] and one["right"]["ok"]
    assert one["wrong"] == four["wrong"]
    assert four["wrong"]["failures"] == [["['w2']", [4, 1]]]
    # and the same with local changes (`local_changes`), on 1 or 4 devices
    for run in one_and_four:
        assert run["right_local"] == one["right"] and run["wrong_local"] == one["wrong"]


def test_each_device_evaluates_its_slice_of_a_batch(one_and_four):
    one, four = one_and_four
    assert four["result_devices"] == 4 and four["shards"] == [2, 2, 2, 2]
    assert one["result_devices"] == 1 and one["shards"] == [8]
