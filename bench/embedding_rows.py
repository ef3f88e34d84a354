"""Full checks of a language model's embedding table: the rows its batch reads, side by side.

    python bench/embedding_rows.py            # vocabularies of 1,000 and 10,000 (~2 min)
    python bench/embedding_rows.py --quick    # a vocabulary of 200 (seconds)

The model (float64): token embeddings (untied, d = 16) and a table of 64 positions, of which a
sequence of 12 reads the first 12; an RMS norm, a tanh layer, a mean over the sequence and a
linear classifier, for a batch of 4 sequences. Its batch reads at most 48 rows of the table:
full mode evaluates those rows' entries and one point for all the others
(`jaxcheck/evaluation/unread_entries.py`), whose loss is the loss at θ exactly; and each read
row's entries on the sequences whose tokens use it (`engine.example_plan`), not the batch.

Rows per vocabulary: jaxcheck full, first call (compilation included) and repeated; the same
with every example of the batch evaluated (the engine's `example_plan` switched off), and with
every entry evaluated too (`unread_mask` switched off as well: what a check cost before both);
and `jax.jit(jax.value_and_grad(loss))`'s first call as the baseline of a first call. Writes
bench/results/<machine>-<date>-embedding-rows.json and .md (the ratios of this run).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import run as mlp_bench  # noqa: E402
from run import Row, log, timed  # noqa: E402

import jaxcheck  # noqa: E402
from jaxcheck.evaluation import engine  # noqa: E402

D, BATCH, LENGTH, POSITIONS, CLASSES = 16, 4, 12, 64, 5
BASELINE = "jax.jit(jax.value_and_grad(loss)), first call"


def model(vocab: int, seed: int = 0) -> tuple[dict, tuple]:
    rng = np.random.default_rng(seed)
    params = {"emb": rng.normal(0, 0.3, (vocab, D)), "pos": rng.normal(0, 0.1, (POSITIONS, D)),
              "w": rng.normal(0, 0.3, (D, 8)), "out": rng.normal(0, 0.3, (8, CLASSES))}
    tokens = rng.integers(0, vocab, (BATCH, LENGTH))
    labels = rng.integers(0, CLASSES, BATCH)
    return ({k: jnp.asarray(v) for k, v in params.items()},
            (jnp.asarray(tokens), jnp.asarray(labels)))


def loss(p, tokens, labels):
    h = p["emb"][tokens] + p["pos"][:LENGTH]
    h = h / jnp.sqrt(jnp.mean(h ** 2, -1, keepdims=True) + 1e-5)
    logits = jnp.tanh(h @ p["w"]).mean(1) @ p["out"]
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(BATCH), labels])


def fresh() -> None:
    jax.clear_caches()
    engine.clear_cache()


def rows_for(vocab: int) -> list[Row]:
    params, args = model(vocab)
    n = sum(int(x.size) for x in params.values())
    rows = []
    fresh()
    t, _ = timed(lambda: jax.block_until_ready(jax.jit(jax.value_and_grad(loss))(params, *args)))
    rows.append(Row(BASELINE, n, t, "compilation included"))
    unread_mask, example_plan = engine.unread_mask, engine.example_plan
    off = lambda *a: None  # noqa: E731
    for label, mask, plan in (("", unread_mask, example_plan),
                              (" (every example evaluated)", unread_mask, off),
                              (" (every entry evaluated)", off, off)):
        engine.unread_mask, engine.example_plan = mask, plan
        try:
            fresh()
            for call in ("", " (repeated call)"):
                t, rep = timed(lambda: jaxcheck.check(loss, params, *args, progress=False))
                rows.append(Row("jaxcheck full" + label + call, n, t, ok=bool(rep.ok)))
        finally:
            engine.unread_mask, engine.example_plan = unread_mask, example_plan
    for r in rows:
        log(f"n={r.n:>8} {r.tool:<55} {r.seconds:8.3f}s")
    return rows


def summary(vocabs: list[int], rows: list[Row]) -> str:
    lines = ["| vocabulary | n | full 1st | full rep | every example: 1st | every example: rep "
             "| every entry: 1st | every entry: rep | rep ÷ every example's rep "
             "| rep ÷ every entry's rep | full 1st ÷ jit 1st |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for vocab in vocabs:
        n = vocab * D + POSITIONS * D + D * 8 + 8 * CLASSES
        s = {r.tool: r.seconds for r in rows if r.n == n}
        full, rep = s["jaxcheck full"], s["jaxcheck full (repeated call)"]
        examples = s["jaxcheck full (every example evaluated)"]
        examples_rep = s["jaxcheck full (every example evaluated) (repeated call)"]
        every = s["jaxcheck full (every entry evaluated)"]
        every_rep = s["jaxcheck full (every entry evaluated) (repeated call)"]
        lines.append(f"| {vocab:,} | {n:,} | {full:.3f} | {rep:.3f} | {examples:.3f} | "
                     f"{examples_rep:.3f} | {every:.3f} | {every_rep:.3f} | "
                     f"{rep / examples_rep:.3f} | {rep / every_rep:.3f} | "
                     f"{full / s[BASELINE]:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small vocabulary: a smoke run")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--name", help="machine name in the results' file names")
    ns = parser.parse_args(argv)
    vocabs = [200] if ns.quick else [1_000, 10_000]
    with jax.enable_x64(True):
        rows = [r for v in vocabs for r in rows_for(v)]
    meta = {"machine": ns.name or mlp_bench.machine_name(),
            "date": datetime.date.today().isoformat(),
            "command": "python bench/embedding_rows.py " + " ".join(
                argv if argv is not None else sys.argv[1:]),
            "jax": jax.__version__, "torch": "-",
            "devices": f"{jax.device_count()} {jax.default_backend()} device(s), "
                       f"{os.cpu_count()} cores"}
    os.makedirs(ns.out, exist_ok=True)
    stem = os.path.join(ns.out, f"{meta['machine']}-{meta['date']}-embedding-rows"
                        + ("-quick" if ns.quick else ""))
    with open(stem + ".json", "w") as fh:
        json.dump({"meta": meta, "rows": [dataclasses.asdict(r) for r in rows]}, fh, indent=1)
    text = (f"# jaxcheck benchmark, embedding rows: {meta['machine']}, {meta['date']}\n\n"
            f"`{meta['command'].strip()}`; jax {meta['jax']}, {meta['devices']}. Seconds; "
            "\"every example evaluated\": the same check with each row's points evaluated on "
            "the whole batch (`engine.example_plan` off); \"every entry evaluated\": and the "
            "unread rows' points evaluated too (`engine.unread_mask` off as well).\n\n"
            + summary(vocabs, rows))
    mlp_bench.write_markdown(stem, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
