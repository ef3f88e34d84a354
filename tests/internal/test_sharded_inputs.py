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
