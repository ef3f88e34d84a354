"""Params sharded over a mesh of 8 forced CPU devices are checked in place, and their reports
equal those of the same check on unsharded params, component by component: FSDP- and
tensor-parallel-style specs over meshes of `Auto` axes, and over JAX's default `Explicit` axes
(checked under `jax.set_mesh`, as training code runs)."""
import numpy as np
import pytest
from sharded_models import run_on_devices

SCRIPT = r"""
import json, sys
import jax, numpy as np
import jaxcheck
import sharded_models as m

params, x = m.params_and_data()
out = {"devices": jax.device_count()}

def summary(rep):
    return {"ok": rep.ok, "mesh": rep.info.get("mesh"), "sharded": rep.info.get("sharded"),
            "failures": [[f.path, list(f.index)] for f in rep.failures],
            "clearing": rep.info.get("clearing", {}).get("first_test"),
            "leaves": [{"path": leaf.path, "status": leaf.status.tolist(),
                        "numerical": leaf.numerical.tolist(),
                        "tolerance": leaf.tolerance.tolist(),
                        "directions": (None if leaf.directions is None
                                       else leaf.directions.status.tolist())}
                       for leaf in rep.leaves]}

for mode in ("full", "fast"):
    for name, grad_fn in (("right", None), ("wrong", m.wrong_grad)):
        out[f"plain/{mode}/{name}"] = summary(
            jaxcheck.check(m.loss, params, x, grad_fn=grad_fn, mode=mode))
        for layout in m.LAYOUTS:
            sp, sx = m.sharded(layout, params, x)
            before = {k: v.sharding for k, v in sp.items()}
            if layout.startswith("explicit"):  # as training code runs under its mesh
                with jax.set_mesh(m.mesh_of(layout)):
                    rep = jaxcheck.check(m.loss, sp, sx, grad_fn=grad_fn, mode=mode)
            else:
                rep = jaxcheck.check(m.loss, sp, sx, grad_fn=grad_fn, mode=mode)
            assert {k: v.sharding for k, v in sp.items()} == before  # params untouched
            out[f"{layout}/{mode}/{name}"] = summary(rep)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def reports():
    return run_on_devices(SCRIPT, devices=8)


@pytest.mark.parametrize("layout", ["fsdp8", "tp2x4", "explicit2x4"])
@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("grad", ["right", "wrong"])
def test_sharded_report_equals_the_unsharded_one(reports, layout, mode, grad):
    assert reports["devices"] == 8
    plain, sharded = reports[f"plain/{mode}/{grad}"], reports[f"{layout}/{mode}/{grad}"]
    assert sharded["ok"] == plain["ok"] == (grad == "right")
    assert sharded["failures"] == plain["failures"]
    # the report says where the params were: sharded over this mesh, checked in place
    assert plain["mesh"] is None
    assert sharded["mesh"] == ({"fsdp": 8} if layout == "fsdp8" else {"data": 2, "model": 4})
    assert {"['w1']", "['w2']"} <= set(sharded["sharded"])
    if grad == "wrong":
        assert sharded["failures"][0] == ["['w2']", [20, 3]]
    # fast mode: the leaves cleared the same way (by the corrected first joint test, whose
    # block entries are read where they live, or by the clearing joint test)
    assert sharded["clearing"] == plain["clearing"]
    assert plain["clearing"] is (True if (mode, grad) == ("fast", "wrong") else None)
    for a, b in zip(plain["leaves"], sharded["leaves"], strict=True):
        assert a["path"] == b["path"]
        assert a["status"] == b["status"]            # every component's verdict
        assert a["directions"] == b["directions"]    # fast mode: every direction's verdict
        # the same estimates up to the summation order of the sharded programs (a few ulps
        # two of f over 2h): well inside each component's error bound
        diff = np.abs(np.subtract(b["numerical"], a["numerical"]))
        assert np.all(diff <= 0.5 * np.asarray(a["tolerance"])), diff.max()
