"""Two processes under `jax.distributed` (gloo CPU collectives on 127.0.0.1, 2 devices each):
every process calls `check` with the same arguments on params sharded over all 4 devices, and
both get the report a one-process check of the unsharded params gives."""
import json
import os

import numpy as np
import pytest
from sharded_models import ROOT, run_processes

import jaxcheck

WORKER = r"""
import json, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{sys.argv[2]}", num_processes=2,
                           process_id=int(sys.argv[1]))
import jax.numpy as jnp, numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import jaxcheck
import sharded_models as m

params, x = m.params_and_data()
mesh = jax.make_mesh((2, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
# w1 and w2 split across both processes, b1 within each
specs = {"w1": P("data", "model"), "b1": P("model"), "w2": P("model", "data"), "g": P()}

def global_array(value, spec):
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, NamedSharding(mesh, spec),
                                        lambda index: value[index])

sp = {k: global_array(v, specs[k]) for k, v in params.items()}
sx = global_array(x, P("data", None))
out = {"process": jax.process_index(), "devices": jax.device_count()}
for mode in ("full", "fast"):
    for name, grad_fn in (("right", None), ("wrong", m.wrong_grad)):
        rep = jaxcheck.check(m.loss, sp, sx, grad_fn=grad_fn, mode=mode,
                             progress=(mode == "full"))
        out[f"{mode}/{name}"] = {
            "ok": rep.ok, "failures": [[f.path, list(f.index)] for f in rep.failures],
            "status": [leaf.status.tolist() for leaf in rep.leaves],
            "numerical": [leaf.numerical.tolist() for leaf in rep.leaves],
            "text": str(rep)}
print("RESULT " + json.dumps(out), flush=True)
jax.distributed.shutdown()
"""


@pytest.fixture(scope="module")
def runs():
    done = run_processes(WORKER, processes=2, devices=2)
    for code, _, stderr in done:
        assert code == 0, stderr[-4000:]
    results = [json.loads(next(line[7:] for line in stdout.splitlines()
                               if line.startswith("RESULT "))) for _, stdout, _ in done]
    return results, [stderr for _, _, stderr in done]


def _one_process(mode, grad):
    import sharded_models as m

    params, x = m.params_and_data()
    return jaxcheck.check(m.loss, params, x, grad_fn=m.wrong_grad if grad == "wrong" else None,
                          mode=mode)


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("grad", ["right", "wrong"])
def test_every_process_gets_the_one_process_report(runs, mode, grad):
    results, _ = runs
    assert [r["process"] for r in results] == [0, 1]
    assert all(r["devices"] == 4 for r in results)
    reference = _one_process(mode, grad)
    first, second = (r[f"{mode}/{grad}"] for r in results)
    assert first == second                       # the same Report on both processes
    assert first["ok"] == reference.ok == (grad == "right")
    assert first["failures"] == [[f.path, list(f.index)] for f in reference.failures]
    for leaf, status, numerical in zip(reference.leaves, first["status"], first["numerical"],
                                       strict=True):
        assert status == leaf.status.tolist()
        assert np.all(np.abs(np.subtract(numerical, leaf.numerical)) <= 0.5 * leaf.tolerance)


def test_only_process_zero_prints_progress(runs):
    _, stderrs = runs
    assert "jaxcheck: full check of" in stderrs[0]
    assert "jaxcheck: full check of" not in stderrs[1]


def _guide_example() -> str:
    with open(os.path.join(ROOT, "docs", "guide", "devices.md")) as f:
        text = f.read()
    start = text.index("<!-- many-hosts-example")
    block = text[text.index("```python\n", start) + len("```python\n"):]
    return block[:block.index("```")]


def test_the_guides_many_hosts_example_runs_on_two_processes():
    done = run_processes(_guide_example(), processes=2, devices=2)
    assert [code for code, _, _ in done] == [0, 0], "".join(e[-3000:] for _, _, e in done)
    assert [out.strip().splitlines()[-1] for _, out, _ in done] == ["0 True", "1 True"]
