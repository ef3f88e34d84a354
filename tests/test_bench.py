"""The benchmark's code path on tiny models (no timing is asserted: times are not verdicts)."""
import importlib.util
import json
import os
import sys

import jax
import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def _loaded(name: str, filename: str):
    """The bench script `filename` as module `name`, while the test module runs."""
    sys.path.insert(0, BENCH)
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, filename))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[name]
    sys.path.remove(BENCH)


@pytest.fixture(scope="module")
def bench():
    yield from _loaded("bench_run", "run.py")


def test_models_have_the_requested_size(bench):
    for n in (1_000, 17_000, 50_000, 1_000_000):
        m = bench.models.n_params(bench.models.hidden_for(n))
        assert abs(m - n) / n < 0.05


def test_quick_run_times_every_tool_and_writes_a_table(bench, tmp_path):
    rows = bench.run((60,), 300, naive_coordinates=8, torch_cap=5.0, numdifftools_max_n=100)
    tools = {r.tool for r in rows}
    assert {"jaxcheck full", "jaxcheck full (repeated call)", "jaxcheck fast",
            "jaxcheck sample", "naive loop (jitted loss, Python loop)", "jax.test_util.check_grads",
            "torch gradcheck full", "jaxcheck full (engine's estimate)"} <= tools
    full = [r for r in rows if r.tool.startswith("jaxcheck full") and r.ok is not None]
    assert full and all(r.ok for r in full)
    text = bench.markdown(rows, {"machine": "test", "date": "today", "command": "quick",
                                 "jax": jax.__version__, "torch": "-", "devices": "cpu"})
    assert "| n | tool | seconds | jaxcheck full ÷ tool | jaxcheck full, repeated ÷ tool |" \
        in text
    assert text.count("\n| 60 |") == len([r for r in rows if r.n == 60])


@pytest.fixture(scope="module")
def architectures():
    yield from _loaded("bench_architectures", "architectures.py")


def test_architectures_have_the_sizes_of_issue_20(architectures):
    sizes = [m.n for m in architectures.arch_models.all_models()]
    assert sizes == [9_242, 10_912, 30_938, 38_208]


@pytest.mark.slow
def test_quick_architectures_run_writes_the_ratios_of_issue_20(architectures):
    models = architectures.arch_models.all_models(quick=True)
    rows = architectures.run(models)
    tools = {r.tool for r in rows}
    assert {architectures.BASELINE, "jaxcheck full", "jaxcheck full (repeated call)",
            "jaxcheck fast", "jaxcheck fast (repeated call)", "torch gradcheck full"} <= tools
    assert all(r.ok for r in rows if r.tool.startswith("jaxcheck"))
    table = architectures.summary(models, rows)
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + len(models)   # the header, then one row per model


@pytest.fixture(scope="module")
def embedding_rows():
    yield from _loaded("bench_embedding_rows", "embedding_rows.py")


def test_quick_embedding_rows_run_checks_each_way_and_writes_their_ratios(embedding_rows,
                                                                           tmp_path):
    assert embedding_rows.main(["--quick", "--out", str(tmp_path)]) == 0
    data = json.loads(next(tmp_path.glob("*-embedding-rows-quick.json")).read_text())
    tools = {r["tool"]: r for r in data["rows"]}
    assert {"jaxcheck full", "jaxcheck full (every example evaluated) (repeated call)",
            "jaxcheck full (every entry evaluated) (repeated call)"} <= set(tools)
    assert all(r["ok"] for t, r in tools.items() if t.startswith("jaxcheck"))
    table = next(tmp_path.glob("*-embedding-rows-quick.md")).read_text()
    assert "| 200 | 4,392 |" in table
