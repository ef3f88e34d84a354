"""What jaxcheck's XLA options (`jaxcheck/_compiler.py`) do to its programs: compile time and
run time per program, with XLA's defaults and with the options, side by side in one run.

    python bench/compile_options.py [--name cpu2] [--quick]

For each model, a check (full mode on the benchmark's architectures, fast mode on them and on
the 1M-parameter MLP of bench/fast_mode_1m.py) runs once to collect every program jaxcheck
lowers. Then each program is compiled with the defaults and with the options, alternately,
twice each (the quicker compile counts), and each executable runs 5 times on zeros of its
input shapes (the quickest run counts: dense arithmetic takes as long on zeros). The options
are applied where `_compiler.options` applies them (CPU, inputs of at most
`_compiler.SMALL_PROGRAM_BYTES`); the table says which programs that is.

Writes bench/results/<name>-<date>-compile-options.json and .md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import arch_models  # noqa: E402
import fast_mode_1m  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxcheck  # noqa: E402
from jaxcheck import _compiler  # noqa: E402
from jaxcheck.evaluation import engine  # noqa: E402


def lowered_programs(run) -> list:
    """The programs jaxcheck lowers while `run()` runs a first check (its compile cache
    cleared first), each with whether it runs once per check (`_compiler.runs_once`)."""
    seen = []
    original = _compiler.compile_lowered

    def recording(lowered, platform, once=False):
        seen.append((lowered, once))
        return original(lowered, platform, once)

    engine.clear_cache()
    _compiler.compile_lowered = recording
    try:
        run()
    finally:
        _compiler.compile_lowered = original
    return seen


def best_run_seconds(compiled, lowered, repeats: int = 5) -> float:
    args, kwargs = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype),
                                          lowered.args_info)
    jax.block_until_ready(compiled(*args, **kwargs))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args, **kwargs))
        best = min(best, time.perf_counter() - start)
    return best


def measure(lowered, once: bool) -> dict:
    size = _compiler.nbytes(jax.tree_util.tree_leaves(lowered.args_info))
    chosen = _compiler.options("cpu", size, once)
    out = {"input_bytes": size, "runs_once": once, "options_applied": chosen is not None}
    compile_s = {"defaults": float("inf"), "options": float("inf")}
    executables = {}
    for _ in range(2):
        for name, opts in (("defaults", {}), ("options", chosen or {})):
            # XLA's own caches cleared; {} rather than None: a Lowered keeps the executable
            # it compiled without options
            jax.clear_caches()
            start = time.perf_counter()
            executables[name] = lowered.compile(opts)
            compile_s[name] = min(compile_s[name], time.perf_counter() - start)
    for name in ("defaults", "options"):
        out[f"compile_{name}"] = compile_s[name]
        out[f"run_{name}"] = best_run_seconds(executables[name], lowered)
    return out


def cases(quick: bool) -> list[tuple[str, object]]:
    out = []
    for m in arch_models.all_models(quick):
        def run(m=m, mode="full"):
            with jax.enable_x64(True):
                jaxcheck.check(arch_models.jax_loss(m), arch_models.jax_params(m),
                               *arch_models.jax_args(m), mode=mode, progress=False)
        out.append((f"{m.name}, full", run))
        out.append((f"{m.name}, fast", lambda run=run: run(mode="fast")))
    if not quick:
        loss, params, args = fast_mode_1m.problem(64, 1000, 10, 64)
        out.append(("MLP, 1,073,010 float32 params, fast",
                    lambda: jaxcheck.check(loss, params, *args, mode="fast")))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="cpu2")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    rows = []
    for label, run in cases(a.quick):
        for k, (lowered, once) in enumerate(lowered_programs(run)):
            with jax.enable_x64(True):   # the programs' float64 inputs
                row = {"case": label, "program": k, **measure(lowered, once)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [f"# jaxcheck's XLA options: {a.name}, {datetime.date.today()}", "",
             f"`python bench/compile_options.py --name {a.name}`; jax {jax.__version__}, "
             f"{os.cpu_count()} cores. Options: `{_compiler.CPU_OPTIONS}` (programs run once per "
             f"check: `{_compiler.ONCE_CPU_OPTIONS}`), applied to programs "
             f"whose inputs take at most {_compiler.SMALL_PROGRAM_BYTES / 2**20:.0f} MiB. "
             "Seconds summed over each case's programs (compile: the quicker of 2; run: the "
             "quickest of 5 runs of one batch).", "",
             "| case | programs | applied to | compile, defaults | compile, options | ratio "
             "| run, defaults | run, options | ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label in dict.fromkeys(r["case"] for r in rows):
        mine = [r for r in rows if r["case"] == label]
        s = {k: sum(r[k] for r in mine) for k in
             ("compile_defaults", "compile_options", "run_defaults", "run_options")}
        lines.append(
            f"| {label} | {len(mine)} | {sum(r['options_applied'] for r in mine)} "
            f"| {s['compile_defaults']:.2f} | {s['compile_options']:.2f} "
            f"| {s['compile_options'] / s['compile_defaults']:.2f} "
            f"| {s['run_defaults'] * 1e3:.1f} ms | {s['run_options'] * 1e3:.1f} ms "
            f"| {s['run_options'] / s['run_defaults']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not a.quick:
        stem = os.path.join(HERE, "results", f"{a.name}-{datetime.date.today()}-compile-options")
        with open(stem + ".json", "w") as f:
            json.dump(rows, f, indent=1)
        with open(stem + ".md", "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
