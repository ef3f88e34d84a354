"""Fast mode on a ≥100M-parameter float32 model sharded over 8 (forced) CPU devices.

    python bench/large_model.py                 # 3 layers of 5792², 100.6M parameters
    python bench/large_model.py --width 2048    # 12.6M, a quick look

The params are an MLP's three weight matrices, placed FSDP-style (rows split over a mesh of
`--devices` devices) before the check; `jaxcheck.check(..., mode="fast")` checks them in
place. Prints and writes, from one run: one jitted forward+backward of the sharded model
(float32); the fast check's time as a ratio to it, for the correct gradient and for gradients
with one entry of W1 off by 1% (the entry at the 95th percentile of |gradient|, and the
largest), whose leaf and index must be named exactly; and the peak host memory during each
check (the process's resident-set peak, reset before each check: on CPU the devices' memory
is host memory, so this counts the params, the float64 working copies, every temporary and
XLA's compiler), against the params' float64 size.
"""
from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=5792)
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--name", default="cpu2")
    ap.add_argument("--quantile", type=float, default=0.95,
                    help="the wrong entry: W1's entry at this quantile of |gradient|, and "
                         "the largest")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--json", help="also write the results' JSON to this path")
    ap.add_argument("--case", type=int, help="run one case in this process (0, 1, 2)")
    return ap.parse_args()


ARGS = parse() if __name__ == "__main__" else None
if ARGS is not None:  # before jax is imported
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={ARGS.devices}")

import datetime  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec  # noqa: E402

sys.path.insert(0, os.path.dirname(HERE))
import jaxcheck  # noqa: E402

LAYERS = 3


def peak_mib() -> float:
    """The resident-set peak since the last `reset_peak` (Linux: VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def loss(p, x, y):
    h = x
    for i in range(LAYERS):
        h = h @ p[f"W{i}"]
        if i < LAYERS - 1:
            h = jnp.tanh(h)
    return 0.5 * jnp.mean((h - y) ** 2)


def model(width: int, devices: int, batch: int, seed: int = 0):
    mesh = jax.make_mesh((devices,), ("fsdp",), axis_types=(AxisType.Auto,))
    rows = NamedSharding(mesh, PartitionSpec("fsdp", None))
    rng = np.random.default_rng(seed)
    params = {}
    for i in range(LAYERS):  # one float32 matrix at a time on the host
        w = rng.standard_normal((width, width), dtype=np.float32)
        w *= np.float32(1 / np.sqrt(width))
        params[f"W{i}"] = jax.device_put(w, rows)
        del w
    x = jnp.asarray(rng.standard_normal((batch, width), dtype=np.float32))
    y = jnp.asarray(rng.standard_normal((batch, width), dtype=np.float32))
    return params, x, y


_grad = jax.jit(jax.grad(loss))


def wrong_at(where: tuple[int, ...]):
    """The gradient with W1[where] off by 1%."""
    def wrong(p, x, y):
        out = _grad(p, x, y)
        return {**out, "W1": out["W1"].at[where].multiply(1.01)}
    return wrong


def timed(f):
    start = time.perf_counter()
    out = f()
    jax.block_until_ready(jax.tree_util.tree_leaves(out) if not hasattr(out, "ok") else [])
    return time.perf_counter() - start, out


def run_case(a: argparse.Namespace) -> dict:
    """One case, in this (fresh) process: its peak memory is the check's alone."""
    params, x, y = model(a.width, a.devices, a.batch)
    n = sum(int(v.size) for v in params.values())
    f64_mib = n * 8 / 2**20
    vg = jax.jit(jax.value_and_grad(loss))
    timed(lambda: vg(params, x, y))
    t_fb = min(timed(lambda: vg(params, x, y))[0] for _ in range(5))
    name, grad_fn, error = "correct", None, 0.0
    if a.case > 0:
        g = np.abs(np.asarray(vg(params, x, y)[1]["W1"])).ravel()
        q = int(a.quantile * (g.size - 1))
        label, flat = ((f"{100 * a.quantile:g}th-percentile |g|", int(np.argpartition(g, q)[q]))
                       if a.case == 1 else ("largest |g|", int(np.argmax(g))))
        error = 0.01 * float(g[flat])   # in float32; the check's float64 value is close
        del g
        where = tuple(int(i) for i in np.unravel_index(flat, (a.width, a.width)))
        name, grad_fn = f"W1{list(where)} ({label}) off by 1%", wrong_at(where)
    before = rss_mib()
    reset_peak()
    seconds, rep = timed(lambda: jaxcheck.check(loss, params, x, y, grad_fn=grad_fn,
                                                mode="fast"))
    peak = peak_mib()
    expected = [] if grad_fn is None else [name.split(" (")[0].replace("W1[", "['W1'][")]
    # How visible the error is along one of W1's own directions: |e_j|·|u_j| against the
    # median tolerance of those directions (|u_j| = c, the power of two in (1/(2√m), 1/√m]
    # for |θ_j| < 1): below 1, fast mode cannot tell it from round-off.
    w1 = rep.leaf("['W1']").directions
    c = 2.0 ** np.floor(np.log2(1 / np.sqrt(a.width * a.width)))
    visibility = error * c / float(np.median(w1.tolerance)) if w1 is not None else None
    return {"case": name, "n": n, "devices": jax.device_count(), "float64_size_mib": f64_mib,
            "forward_backward_seconds": t_fb, "expected": expected, "ok": rep.ok,
            "failures": [f.location for f in rep.failures],
            "evaluations": rep.info["evaluations"], "seconds": seconds,
            "ratio_to_forward_backward": seconds / t_fb, "rss_before_mib": before,
            "peak_mib": peak, "peak_over_f64_size": peak / f64_mib,
            "added_over_f64_size": (peak - before) / f64_mib,
            "error_over_direction_tolerance": visibility}


def main() -> None:
    a = ARGS
    assert a is not None
    if a.case is not None:
        print("ROW " + json.dumps(run_case(a)), flush=True)
        return
    rows = []
    for case in range(3):  # correct; the 95th-percentile entry wrong; the largest wrong
        args = [sys.executable, os.path.abspath(__file__), "--case", str(case), "--width",
                str(a.width), "--devices", str(a.devices), "--batch", str(a.batch),
                "--quantile", str(a.quantile)]
        run = subprocess.run(args, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise RuntimeError(f"case {case} failed:\n{run.stderr[-3000:]}")
        row = json.loads(next(line[4:] for line in run.stdout.splitlines()
                              if line.startswith("ROW ")))
        rows.append(row)
        print(f"[{row['case']}] ok={row['ok']} failures={row['failures']} "
              f"evaluations={row['evaluations']:,}: {row['seconds']:.1f} s "
              f"({row['ratio_to_forward_backward']:,.0f}x fwd+bwd of "
              f"{row['forward_backward_seconds'] * 1e3:.0f} ms); peak host memory "
              f"{row['peak_mib']:,.0f} MiB = {row['peak_over_f64_size']:.2f}x the params' "
              f"float64 size ({row['added_over_f64_size']:.2f}x added by the check)",
              flush=True)
    first = rows[0]
    result = {"n": first["n"], "devices": first["devices"], "width": a.width,
              "batch": a.batch, "float64_size_mib": first["float64_size_mib"],
              "jax": jax.__version__, "date": datetime.date.today().isoformat(),
              "rows": rows, "command": "python bench/large_model.py " + " ".join(sys.argv[1:])}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    if not a.no_write:
        stem = os.path.join(HERE, "results", f"{a.name}-{result['date']}-large-model")
        with open(stem + ".json", "w") as f:
            json.dump(result, f, indent=2)
        with open(stem + ".md", "w") as f:
            f.write(markdown(result))
        print(f"wrote {stem}.json and .md")


def markdown(r: dict) -> str:
    lines = [f"# Fast mode on {r['n']:,} float32 parameters, {r['devices']} CPU devices "
             f"({r['date']})", "",
             f"`{r['command']}`; jax {r['jax']}; FSDP (rows split over the mesh); params' "
             f"float64 size {r['float64_size_mib']:,.0f} MiB. Each case runs in a fresh "
             "process, which times one jitted forward+backward (float32) of the sharded model "
             "before the check; peak host memory is the process's resident-set peak during "
             "the check (it includes the float32 params, the JAX runtime and XLA's compiler); "
             "'added' subtracts the resident set just before the check.", "",
             "| case | ok | failures | evaluations | seconds | fwd+bwd ms | ÷ fwd+bwd | "
             "peak host MiB | peak ÷ float64 size | added by the check ÷ float64 size | "
             "error ÷ tolerance along W1's directions |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in r["rows"]:
        case = row["case"].replace("|", "\\|")  # a pipe inside a table cell
        lines.append(f"| {case} | {row['ok']} | {', '.join(row['failures'])} | "
                     f"{row['evaluations']:,} | {row['seconds']:.1f} | "
                     f"{row['forward_backward_seconds'] * 1e3:.0f} | "
                     f"{row['ratio_to_forward_backward']:,.0f} | {row['peak_mib']:,.0f} | "
                     f"{row['peak_over_f64_size']:.2f} | {row['added_over_f64_size']:.2f} |"
                     f" {row['error_over_direction_tolerance'] or 0:.3g} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
