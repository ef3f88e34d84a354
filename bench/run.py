"""The benchmark: jaxcheck against the field, side by side in one run on the same models.

    python bench/run.py            # the sizes of record (about 20-40 min on 2 cores)
    python bench/run.py --quick    # a smoke run on tiny models (seconds)

Models: float64 MLPs 32-H-H-10, tanh, softmax cross-entropy, batch 64 (bench/models.py), with
n ≈ 1e3 … 5e4 parameters for the full checks and ≈ 1e6 for the fast ones. Tools, each on the
same weights and data:

- jaxcheck full: the first call (includes compilation) and a repeated call (reuses the
  compiled programs, as a check every N training steps does; the median of
  `REPEATED_CALLS` = 5 calls); jaxcheck fast and sample modes;
- the naive loop of the classic recipe: a Python loop over coordinates, two calls of a jitted
  loss each (timed on a subset of coordinates at large n and extrapolated: marked "~");
- torch.autograd.gradcheck full mode and fast_mode (only when torch is importable; full mode
  extrapolated from a subset of its inputs when it would exceed the time cap: marked "~");
- jax.test_util.check_grads (one random direction, order 1, reverse mode);
- numdifftools.Gradient (only when importable; at n ≈ 1e3).

Writes bench/results/<machine>-<date>.json and .md (times, and ratios jaxcheck full ÷ each
other tool). Absolute times vary on shared machines; the ratios of one run are the figures of
record.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import models  # noqa: E402
import numpy as np  # noqa: E402

import jaxcheck  # noqa: E402

FULL_SIZES = (1_000, 5_000, 17_000, 50_000)
FAST_SIZE = 1_000_000
QUICK_FULL_SIZES = (60, 300)
QUICK_FAST_SIZE = 2_000


@dataclasses.dataclass
class Row:
    tool: str
    n: int
    seconds: float | None
    note: str = ""
    extrapolated: bool = False
    ok: bool | None = None


def timed(f: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = f()
    return time.perf_counter() - start, out


# A repeated call's time is the median of this many calls: one call of tens of milliseconds
# varies by a quarter run to run on a shared machine (n = 970, full mode: 29-46 ms).
REPEATED_CALLS = 5


def repeated(f: Callable[[], Any], warm: bool = True) -> tuple[float, Any]:
    """The median time of `REPEATED_CALLS` calls of `f`, and the last call's output; `warm`:
    after a first call (not timed) that compiles what it needs (False where the caller just
    made it)."""
    if warm:
        f()
    times, out = [], None
    for _ in range(REPEATED_CALLS):
        t, out = timed(f)
        times.append(t)
    return float(np.median(times)), out


def log(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the tools


def jaxcheck_mode(m: models.Model, mode: str, repeat: bool = False) -> Row:
    tool = f"jaxcheck {mode}" + (" (repeated call)" if repeat else "")
    with jax.enable_x64(True):
        p = models.jax_params(m)
        x, y = jnp.asarray(m.x), jnp.asarray(m.labels)
        try:
            t, rep = (repeated if repeat else timed)(
                lambda: jaxcheck.check(models.jax_loss, p, x, y, mode=mode, progress=False))
        except (NotImplementedError, ValueError, TypeError) as e:
            return Row(tool, m.n, None, f"not available ({type(e).__name__})")
    return Row(tool, m.n, t, ok=bool(rep.ok))


def jaxcheck_full_estimate(m: models.Model) -> Row:
    """The engine's own estimate of a full check (one timed batch per leaf)."""
    from jaxcheck.evaluation import engine
    from jaxcheck.inputs import pytree
    from jaxcheck.inputs.problem import Problem
    with jax.enable_x64(True):
        p = pytree.split(models.jax_params(m))
        a = pytree.split((jnp.asarray(m.x), jnp.asarray(m.labels)), check_floats=False)
        problem = Problem(lambda q, x, y: models.jax_loss(q, x, y), p.structure,
                           a.structure)
        seconds = 0.0
        for position in p.checked:
            points = 2 * int(p.dynamic[position].size) + 1
            seconds += points * engine.seconds_per_evaluation(problem, position, p.dynamic,
                                                               a.dynamic, points)
    return Row("jaxcheck full (engine's estimate)", m.n, seconds, "estimated, not run",
               extrapolated=True)


def naive_loop(m: models.Model, max_coordinates: int) -> Row:
    """The classic recipe: θᵢ ± h one coordinate at a time, a jitted loss called twice."""
    with jax.enable_x64(True):
        loss, theta = models.jax_flat_loss(m)
        f = jax.jit(loss)
        g = np.asarray(jax.jit(jax.grad(loss))(theta))
        f(theta).block_until_ready()
        k = min(m.n, max_coordinates)
        coords = np.random.default_rng(0).choice(m.n, k, replace=False) if k < m.n else range(k)
        h = 1e-6
        start = time.perf_counter()
        num = []
        for i in coords:
            t = theta.copy()
            t[i] += h
            fp = float(f(t))
            t[i] -= 2 * h
            fm = float(f(t))
            num.append((fp - fm) / (2 * h))
        seconds = (time.perf_counter() - start) * m.n / k
        gi = g[np.asarray(list(coords))]
        num = np.asarray(num)
        rel = np.linalg.norm(gi - num) / (np.linalg.norm(gi) + np.linalg.norm(num))
    note = f"extrapolated from {k} of {m.n} coordinates" if k < m.n else ""
    return Row("naive loop (jitted loss, Python loop)", m.n, seconds, note, k < m.n,
               ok=bool(rel < 1e-5))


def check_grads(m: models.Model) -> Row:
    from jax.test_util import check_grads as cg
    with jax.enable_x64(True):
        loss, theta = models.jax_flat_loss(m)
        theta = jnp.asarray(theta)

        def run():
            try:
                cg(loss, (theta,), order=1, modes=("rev",))
                return True
            except AssertionError:
                return False
        t, ok = timed(run)
    return Row("jax.test_util.check_grads", m.n, t, "one random direction", ok=ok)


def numdifftools_gradient(m: models.Model) -> Row:
    try:
        import numdifftools as nd
    except ImportError:
        return Row("numdifftools.Gradient", m.n, None, "not installed")
    with jax.enable_x64(True):
        loss, theta = models.jax_flat_loss(m)
        f = jax.jit(loss)
        g = np.asarray(jax.jit(jax.grad(loss))(theta))
        f(theta).block_until_ready()
        t, num = timed(lambda: nd.Gradient(lambda th: float(f(th)))(theta))
    rel = np.linalg.norm(g - num) / (np.linalg.norm(g) + np.linalg.norm(num))
    return Row("numdifftools.Gradient", m.n, t, "", ok=bool(rel < 1e-7))


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def torch_gradcheck(m: models.Model, fast: bool, cap_seconds: float) -> Row:
    tool = f"torch gradcheck {'fast_mode' if fast else 'full'}"
    if not torch_available():
        return Row(tool, m.n, None, "torch not installed")
    from torch.autograd import gradcheck
    loss, tensors = models.torch_loss(m)
    if fast:
        t, ok = timed(lambda: gradcheck(loss, tensors, fast_mode=True))
        return Row(tool, m.n, t, ok=bool(ok))
    # Full mode perturbs every element and runs a whole forward pass for each, at a cost
    # per element that does not depend on which tensor it is in: time the small tensors
    # (b1, b2, w3, b3) and scale to n when the whole run would exceed the cap.
    small = tuple(x if i in (1, 3, 4, 5) else x.detach() for i, x in enumerate(tensors))
    k = sum(x.numel() for x in small if x.requires_grad)
    t_small, ok = timed(lambda: gradcheck(loss, small))
    predicted = t_small * m.n / k
    if predicted <= cap_seconds or k == m.n:
        t, ok = timed(lambda: gradcheck(loss, tensors))
        return Row(tool, m.n, t, ok=bool(ok))
    return Row(tool, m.n, predicted, f"extrapolated from {k} of {m.n} elements", True,
               ok=bool(ok))


def forward_backward(m: models.Model) -> Row:
    with jax.enable_x64(True):
        p = models.jax_params(m)
        x, y = jnp.asarray(m.x), jnp.asarray(m.labels)
        f = jax.jit(jax.value_and_grad(models.jax_loss))
        jax.block_until_ready(f(p, x, y))
        reps = 20
        start = time.perf_counter()
        for _ in range(reps):
            out = f(p, x, y)
        jax.block_until_ready(out)
    return Row("one forward+backward (jax.value_and_grad)", m.n,
               (time.perf_counter() - start) / reps)


# ---------------------------------------------------------------- the run


def run(full_sizes, fast_size, naive_coordinates: int, torch_cap: float,
        numdifftools_max_n: int) -> list[Row]:
    rows: list[Row] = []

    def add(row: Row) -> None:
        rows.append(row)
        shown = "—" if row.seconds is None else f"{row.seconds:.3f}s"
        log(f"n={row.n:>8} {row.tool:<45} {shown:>10} {row.note}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jaxcheck.CostWarning)
        for n in full_sizes:
            m = models.make(models.hidden_for(n))
            add(jaxcheck_mode(m, "full"))
            add(jaxcheck_mode(m, "full", repeat=True))
            add(jaxcheck_mode(m, "fast"))
            add(jaxcheck_mode(m, "sample"))
            add(naive_loop(m, naive_coordinates))
            add(torch_gradcheck(m, False, torch_cap))
            add(torch_gradcheck(m, True, torch_cap))
            add(check_grads(m))
            if m.n <= numdifftools_max_n:
                add(numdifftools_gradient(m))
            add(forward_backward(m))
        m = models.make(models.hidden_for(fast_size))
        add(forward_backward(m))
        add(jaxcheck_mode(m, "fast", repeat=True))
        add(jaxcheck_mode(m, "sample", repeat=True))
        add(jaxcheck_full_estimate(m))
        add(torch_gradcheck(m, True, torch_cap))
        add(check_grads(m))
    return rows


def machine_name() -> str:
    backend = jax.default_backend()
    if backend == "cpu":
        return f"cpu{os.cpu_count()}"
    kind = jax.devices()[0].device_kind.lower().replace(" ", "-")
    return f"{backend}-{kind}"


def markdown(rows: list[Row], meta: dict) -> str:
    lines = [f"# jaxcheck benchmark: {meta['machine']}, {meta['date']}", "",
             f"`{meta['command']}`; jax {meta['jax']}, torch {meta['torch']}, "
             f"{meta['devices']}. Times in seconds (first call, compilation included, unless "
             "marked repeated); `~` = extrapolated or estimated (see note). Ratios = jaxcheck "
             "full (first call, or repeated call) ÷ tool at the same n (< 1: jaxcheck "
             "faster).", ""]
    lines += ["| n | tool | seconds | jaxcheck full ÷ tool | jaxcheck full, repeated ÷ tool "
              "| verdict ok | note |", "|---:|---|---:|---:|---:|---|---|"]
    for n in sorted({r.n for r in rows}):
        group = [r for r in rows if r.n == n]
        first = next((r.seconds for r in group if r.tool == "jaxcheck full"), None)
        if first is None:
            first = next((r.seconds for r in group if r.tool.startswith("jaxcheck full")), None)
        again = next((r.seconds for r in group if r.tool == "jaxcheck full (repeated call)"),
                     None)
        for r in group:
            secs = "n/a" if r.seconds is None else ("~" if r.extrapolated else "") + \
                f"{r.seconds:.4g}"
            own = r.tool.startswith("jaxcheck full")
            def ratio(ref, r=r, own=own):
                return ("" if r.seconds is None or ref is None or not r.seconds or own
                        else f"{ref / r.seconds:.3g}")
            ok = "" if r.ok is None else str(r.ok)
            lines.append(f"| {n} | {r.tool} | {secs} | {ratio(first)} | {ratio(again)} | {ok} "
                         f"| {r.note} |")
    fb = {r.n: r.seconds for r in rows if r.tool.startswith("one forward+backward")}
    fast = [r for r in rows if r.tool.startswith("jaxcheck fast (repeated") and r.seconds]
    if fast:
        lines += ["", "Fast mode, repeated call, in forward+backward passes: " + ", ".join(
            f"n={r.n}: {r.seconds / fb[r.n]:.1f}×" for r in fast if fb.get(r.n))]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models: a smoke run")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--sizes", type=int, nargs="*", help="parameter counts of full checks")
    parser.add_argument("--fast-size", type=int, help="parameter count for the fast modes")
    parser.add_argument("--torch-cap", type=float, default=300.0,
                        help="seconds above which torch full mode is extrapolated")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--name", help="machine name in the results' file names")
    ns = parser.parse_args(argv)
    full_sizes = ns.sizes or (QUICK_FULL_SIZES if ns.quick else FULL_SIZES)
    fast_size = ns.fast_size or (QUICK_FAST_SIZE if ns.quick else FAST_SIZE)
    if torch_available():
        import torch
        # One thread: with two, OpenMP's spinning threads collapse on a loaded machine, and
        # one core is enough for these matrix sizes (recorded in the results).
        torch.set_num_threads(ns.torch_threads)
    rows = run(full_sizes, fast_size, naive_coordinates=64 if ns.quick else 2000,
               torch_cap=30.0 if ns.quick else ns.torch_cap,
               numdifftools_max_n=400 if ns.quick else 1500)
    torch_version = "not installed"
    if torch_available():
        import torch
        torch_version = f"{torch.__version__} ({torch.get_num_threads()} thread(s))"
    meta = {"machine": ns.name or machine_name(),
            "date": datetime.date.today().isoformat(),
            "command": "python bench/run.py " + " ".join(argv if argv is not None
                                                         else sys.argv[1:]),
            "jax": jax.__version__, "torch": torch_version,
            "devices": f"{jax.device_count()} {jax.default_backend()} device(s), "
                       f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}"}
    os.makedirs(ns.out, exist_ok=True)
    stem = os.path.join(ns.out, f"{meta['machine']}-{meta['date']}" + ("-quick" if ns.quick
                                                                        else ""))
    with open(stem + ".json", "w") as fh:
        json.dump({"meta": meta, "rows": [dataclasses.asdict(r) for r in rows]}, fh, indent=1)
    write_markdown(stem, markdown(rows, meta))
    return 0


def write_markdown(stem: str, text: str) -> None:
    """The results' table beside their JSON (`stem`.md), also printed."""
    with open(stem + ".md", "w") as fh:
        fh.write(text)
    print(text)
    log(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    sys.exit(main())
