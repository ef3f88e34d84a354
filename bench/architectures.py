"""The benchmark on architectures: CNNs and transformer blocks, side by side in one run.

    python bench/architectures.py            # the four models of record (about 10 min on 2 cores)
    python bench/architectures.py --quick    # tiny models with the same code paths (seconds)

Models (bench/arch_models.py, float64): a CNN (conv 3→8→16, dense, n = 9,242), a transformer
block (embeddings, causal attention, layer norms, MLP, tied output, n = 10,912), a wider CNN
(n = 30,938) and the transformer block at d = 64 (n = 38,208). The torch module of each gets
the same weights, and its loss equals JAX's to 1e-14 (asserted before anything is timed).

Rows per model, each a first call after `jax.clear_caches()` and the engine's
`clear_cache()` (so compilation is included), unless marked repeated:

- `jax.jit(jax.value_and_grad(loss))`, first call: compiling and running the model's own
  training step, the baseline a first check is compared with;
- jaxcheck full and fast: the first call and a repeated call (reuses the compiled programs, as
  a check every N training steps does; the median of 5 calls, as bench/run.py's);
- torch.autograd.gradcheck, full and fast_mode, on the module's loss as a function of its
  parameters (torch on 1 thread, as bench/run.py).

Writes bench/results/<machine>-<date>-architectures.json and .md: the rows in bench/run.py's
table, and per model the ratios of issue 20 (jaxcheck first call ÷ the baseline's first call,
jaxcheck full ÷ torch full). Absolute times vary on shared machines; the ratios of one run are
the figures of record.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import arch_models  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import run as mlp_bench  # noqa: E402
from run import Row, log, timed  # noqa: E402

import jaxcheck  # noqa: E402
from jaxcheck.evaluation import engine  # noqa: E402

BASELINE = "jax.jit(jax.value_and_grad(loss)), first call"
# Tensors of at most this many elements are timed when torch's full mode is extrapolated.
SMALL_TENSOR = 1024


def fresh() -> None:
    """Forget every compiled program (JAX's and jaxcheck's): the next call is a first call."""
    jax.clear_caches()
    engine.clear_cache()


def baseline(m: arch_models.Arch) -> Row:
    with jax.enable_x64(True):
        p, args = arch_models.jax_params(m), arch_models.jax_args(m)
        fresh()
        t, _ = timed(lambda: jax.block_until_ready(
            jax.jit(jax.value_and_grad(arch_models.jax_loss(m)))(p, *args)))
    return Row(BASELINE, m.n, t, "compilation included")


def jaxcheck_mode(m: arch_models.Arch, mode: str) -> list[Row]:
    """The first call and a repeated call of a check in `mode`."""
    rows = []
    with jax.enable_x64(True):
        p, args = arch_models.jax_params(m), arch_models.jax_args(m)
        fresh()
        def call():
            return jaxcheck.check(arch_models.jax_loss(m), p, *args, mode=mode, progress=False)
        # the repeated calls follow the first call, timed just before
        for tool, how in ((f"jaxcheck {mode}", timed),
                          (f"jaxcheck {mode} (repeated call)",
                           lambda f: mlp_bench.repeated(f, warm=False))):
            before = engine.compilations()
            t, rep = how(call)
            rows.append(Row(tool, m.n, t, f"{engine.compilations() - before} engine programs "
                                          "compiled (besides the gradient's)",
                            ok=bool(rep.ok)))
    return rows


def torch_gradcheck(m: arch_models.Arch, fast: bool, cap_seconds: float | None = None) -> Row:
    tool = f"torch gradcheck {'fast_mode' if fast else 'full'}"
    if not mlp_bench.torch_available():
        return Row(tool, m.n, None, "torch not installed")
    from torch.autograd import gradcheck
    loss, tensors = arch_models.torch_loss(m)
    if fast or cap_seconds is None:
        t, ok = timed(lambda: gradcheck(loss, tensors, fast_mode=fast))
        return Row(tool, m.n, t, ok=bool(ok))
    # As bench/run.py: full mode costs a forward pass per element, wherever it is, so time the
    # small tensors (biases, norms, ...) and scale to n when the whole run would exceed the cap.
    small = tuple(x if x.numel() <= SMALL_TENSOR else x.detach() for x in tensors)
    k = sum(x.numel() for x in small if x.requires_grad)
    t_small, ok = timed(lambda: gradcheck(loss, small))
    predicted = t_small * m.n / k
    if predicted <= cap_seconds:
        t, ok = timed(lambda: gradcheck(loss, tensors))
        return Row(tool, m.n, t, ok=bool(ok))
    return Row(tool, m.n, predicted, f"extrapolated from {k} of {m.n} elements", True,
               ok=bool(ok))


def run(models: list[arch_models.Arch], torch_cap: float | None = None) -> list[Row]:
    rows: list[Row] = []

    def add(row: Row) -> None:
        rows.append(row)
        shown = "—" if row.seconds is None else f"{row.seconds:.3f}s"
        log(f"n={row.n:>8} {row.tool:<50} {shown:>10} {row.note}")

    # JAX's backend starts on the first computation: not part of any row
    with jax.enable_x64(True):
        jax.block_until_ready(jax.jit(jnp.sin)(jnp.ones(3)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jaxcheck.CostWarning)
        for m in models:
            if mlp_bench.torch_available():
                arch_models.equal_losses(m)
            add(baseline(m))
            for row in jaxcheck_mode(m, "full") + jaxcheck_mode(m, "fast"):
                add(row)
            add(torch_gradcheck(m, False, torch_cap))
            add(torch_gradcheck(m, True))
    return rows


def summary(models: list[arch_models.Arch], rows: list[Row]) -> str:
    """Issue 20's table: per model the times and the ratios of its "done when"."""
    def s(n: int, tool: str) -> float | None:
        return next((r.seconds for r in rows if r.n == n and r.tool == tool), None)

    def ratio(a: float | None, b: float | None) -> str:
        return "n/a" if a is None or not b else f"{a / b:.2f}"

    def secs(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3g}"

    lines = ["| model | n | jit(value_and_grad) 1st | full 1st | full rep | fast 1st | fast rep "
             "| torch full | torch fast | fast 1st ÷ jit 1st (≤ 2) | full 1st ÷ jit 1st (≤ 4) "
             "| full ÷ torch full, 1st (≤ 0.2) / rep (≤ 0.05) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for m in models:
        jit = s(m.n, BASELINE)
        full, full_rep = s(m.n, "jaxcheck full"), s(m.n, "jaxcheck full (repeated call)")
        fast, fast_rep = s(m.n, "jaxcheck fast"), s(m.n, "jaxcheck fast (repeated call)")
        tf, tfast = s(m.n, "torch gradcheck full"), s(m.n, "torch gradcheck fast_mode")
        lines.append(f"| {m.name} | {m.n:,} | {secs(jit)} | {secs(full)} | {secs(full_rep)} | "
                     f"{secs(fast)} | {secs(fast_rep)} | {secs(tf)} | {secs(tfast)} | "
                     f"{ratio(fast, jit)} | {ratio(full, jit)} | "
                     f"{ratio(full, tf)} / {ratio(full_rep, tf)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models: a smoke run")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--torch-cap", type=float, default=None,
                        help="seconds above which torch full mode is extrapolated from the "
                             "small tensors (default: always run in full)")
    parser.add_argument("--name", help="machine name in the results' file names")
    parser.add_argument("--note", default="", help="a line on the machine's load, recorded")
    ns = parser.parse_args(argv)
    if mlp_bench.torch_available():
        import torch
        torch.set_num_threads(ns.torch_threads)  # as bench/run.py: one thread
    models = arch_models.all_models(ns.quick)
    rows = run(models, ns.torch_cap)
    torch_version = "not installed"
    if mlp_bench.torch_available():
        import torch
        torch_version = f"{torch.__version__} ({torch.get_num_threads()} thread(s))"
    meta = {"machine": ns.name or mlp_bench.machine_name(),
            "date": datetime.date.today().isoformat(),
            "command": "python bench/architectures.py " + " ".join(
                argv if argv is not None else sys.argv[1:]),
            "jax": jax.__version__, "torch": torch_version,
            "devices": f"{jax.device_count()} {jax.default_backend()} device(s), "
                       f"{os.cpu_count()} cores", "note": ns.note}
    os.makedirs(ns.out, exist_ok=True)
    stem = os.path.join(ns.out, f"{meta['machine']}-{meta['date']}-architectures"
                        + ("-quick" if ns.quick else ""))
    with open(stem + ".json", "w") as fh:
        json.dump({"meta": meta, "rows": [dataclasses.asdict(r) for r in rows]}, fh, indent=1)
    text = mlp_bench.markdown(rows, meta).replace("# jaxcheck benchmark:",
                                                  "# jaxcheck benchmark, architectures:", 1)
    # (no forward+backward rows here: the MLP table's line about them would be empty)
    text = text.replace("\nFast mode, repeated call, in forward+backward passes: \n", "")
    text += ("\n" + (ns.note + "\n\n" if ns.note else "") + "Issue 20's figures (ratios of "
             "this run):\n\n" + summary(models, rows))
    mlp_bench.write_markdown(stem, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
