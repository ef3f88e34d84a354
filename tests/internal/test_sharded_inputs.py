"""No evaluation gathers a sharded leaf: every compiled program of a check takes the params
in their own shardings (the engine's batch programs and fast mode's whole-batch programs)."""
import pytest
from sharded_models import run_on_devices

SCRIPT = r"""
import contextlib, json
import jax
import jaxcheck
from jaxcheck.evaluation import engine
import sharded_models as m

params, x = m.params_and_data()
seen = []            # (program kind, leaf shape, its sharding spec as given to the program)
original = engine.call

def recording(fn, static, *dynamic):
    for leaf in jax.tree_util.tree_leaves(dynamic):
        if hasattr(leaf, "sharding") and leaf.ndim == 2 and leaf.size >= 256:
            seen.append(["call", list(leaf.shape), str(leaf.sharding.spec),
                         leaf.sharding.is_fully_replicated])
    return original(fn, static, *dynamic)

engine.call = recording
out = {}
for layout in m.LAYOUTS:
    sp, sx = m.sharded(layout, params, x)
    engine.clear_cache()
    seen.clear()
    with contextlib.ExitStack() as stack:
        if layout.startswith("explicit"):
            stack.enter_context(jax.set_mesh(m.mesh_of(layout)))
        for mode in ("full", "fast"):
            jaxcheck.check(m.loss, sp, sx, grad_fn=m.wrong_grad, mode=mode)
    for p in engine.cached_programs():
        shared = p.input_shardings[0]
        for leaf, s in zip(jax.tree_util.tree_leaves(sp), jax.tree_util.tree_leaves(shared[0])):
            seen.append(["batch", list(leaf.shape), str(s.spec), s.is_fully_replicated,
                         s.is_equivalent_to(leaf.sharding, leaf.ndim)])
    out[layout] = {"seen": list(seen),
                   "specs": {k: str(v.sharding.spec) for k, v in sp.items()}}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def seen():
    return run_on_devices(SCRIPT, devices=8)


@pytest.mark.parametrize("layout", ["fsdp8", "tp2x4", "explicit2x4"])
def test_every_program_takes_the_params_in_their_own_shardings(seen, layout):
    records = seen[layout]["seen"]
    kinds = {r[0] for r in records}
    assert kinds == {"batch", "call"}   # full mode's batch programs and fast mode's calls
    for record in records:
        if record[0] == "batch":    # the program's input sharding is the leaf's own
            assert record[4], record
        else:                       # w1 and w2 reach the program sharded (never gathered)
            assert not record[3], record


RESHARD_SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import jaxcheck
from jaxcheck.evaluation import engine
from jaxcheck.numerics import fast
from jaxcheck.plan import gradients

W = 512
mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(AxisType.Auto,))
rng = np.random.default_rng(0)
params = {f"W{i}": jax.device_put(jnp.asarray(rng.standard_normal((W, W)) / 16, jnp.float32),
                                  NamedSharding(mesh, P("fsdp", None))) for i in range(3)}
x = jnp.asarray(rng.standard_normal((8, W)), jnp.float32)
y = jnp.asarray(rng.standard_normal((8, W)), jnp.float32)

def loss(p, x, y):
    h = jnp.tanh(jnp.tanh(x @ p["W0"]) @ p["W1"]) @ p["W2"]
    return 0.5 * jnp.mean((h - y) ** 2)

programs = []
def record(name, compiled):
    programs.append([name, "all-to-all" in compiled.as_text(),
                     int(compiled.memory_analysis().temp_size_in_bytes)])

compile_call = engine._compile_call
def compiling(fn, static, specs):
    compiled = compile_call(fn, static, specs)
    record(fn.__name__, compiled)
    return compiled

autodiff = gradients._autodiff_gradient
def gradient(*args):
    record("gradient", autodiff.lower(*args).compile())
    return autodiff(*args)

engine._compile_call = compiling
gradients._autodiff_gradient = gradient
# each leaf's own directions, one per call, as at 1e8 parameters (where the joint test's
# copies of the params do not fit and a batch holds one direction)
fast._fits_together = lambda gs: False
report = jaxcheck.check(loss, params, x, y, mode="fast", batch_size=2)

# a grad_fn's gradient: computed where the leaf lives (no copy moved there afterwards)
placed = []
user_call = gradients._call
def recording(problem, *args):
    out = user_call(problem, *args)
    if isinstance(out, dict):   # grad_fn's gradient (the loss is a scalar)
        placed.extend(out[k].sharding.is_equivalent_to(params[k].sharding, 2) for k in params
                      if out[k] is not None)   # one leaf's gradient at a time
    return out
gradients._call = recording
user_grad = jax.grad(loss)
with_grad_fn = jaxcheck.check(loss, params, x, y, grad_fn=user_grad, mode="fast",
                              batch_size=2)

# a grad_fn run op by op (Python control flow on a value) may return arrays its caller holds:
# their buffers are not given to the flat copies jaxcheck makes (the others' are)
with jax.enable_x64(True):   # the gradient at the float64 point the check evaluates
    held = jax.jit(jax.grad(loss))(jax.tree.map(lambda a: a.astype(jnp.float64), params),
                                   x.astype(jnp.float64), y.astype(jnp.float64))
def eager_grad(p, x, y):
    if float(loss(p, x, y)) > -1:
        return held
    raise AssertionError
eager = jaxcheck.check(loss, params, x, y, grad_fn=eager_grad, mode="fast", batch_size=2)
kept = not any(g.is_deleted() for g in held.values()) and bool(eager.ok)
print(json.dumps({"ok": bool(report.ok) and bool(with_grad_fn.ok), "programs": programs,
                  "shard_bytes": W * W * 8 // 8, "placed": placed, "kept": kept}))
"""


def test_no_program_reshards_a_row_split_weight():
    # Data replicated next to row-split weights made XLA reshard each weight to columns (an
    # all-to-all holding three copies of its shard per device); the data is now left for XLA
    # to place, and a direction's temporaries are one copy of the leaf's shard (its u); a
    # grad_fn's gradient is computed in the leaf's sharding
    out = run_on_devices(RESHARD_SCRIPT, devices=8)
    assert out["ok"]
    kinds = {p[0] for p in out["programs"]}
    assert {"gradient", "_evaluate_directions"} <= kinds, kinds
    assert out["placed"] and all(out["placed"]), out["placed"]
    assert out["kept"]
    for name, all_to_all, temp in out["programs"]:
        assert not all_to_all, name
        if name in ("gradient", "_evaluate_directions"):
            assert temp <= 1.5 * out["shard_bytes"], (name, temp, out["shard_bytes"])
