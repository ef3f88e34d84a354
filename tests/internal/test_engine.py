import io
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcheck
from jaxcheck.evaluation import engine, progress, sharing
from jaxcheck.inputs import pytree
from jaxcheck.inputs.problem import Problem


def mlp_loss(p, x):
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    return jnp.sum((h @ p["w2"]) ** 2)


def mlp(hidden=5, seed=0):
    rng = np.random.default_rng(seed)
    params = {"w1": jnp.asarray(rng.normal(size=(3, hidden))), "b1": jnp.zeros(hidden),
              "w2": jnp.asarray(rng.normal(size=(hidden, 2)))}
    return params, jnp.asarray(rng.normal(size=(4, 3)))


def wrong_grad(p, x):
    g = jax.grad(mlp_loss)(p, x)
    return {**g, "w1": g["w1"].at[1, 2].multiply(1.001)}


def test_second_check_with_same_shapes_compiles_no_batch_program():
    params, x = mlp()
    jaxcheck.check(mlp_loss, params, x)
    before = engine.compilations()
    report = jaxcheck.check(mlp_loss, params, x)
    assert report.ok
    assert engine.compilations() == before


def test_one_program_per_leaf_however_many_chunks(monkeypatch):
    monkeypatch.setattr(sharing, "groups", lambda *args: [])   # a program per leaf
    params, x = mlp(hidden=7, seed=1)
    engine.clear_cache()
    before = engine.compilations()
    # batch_size=4 forces many chunks in both passes of every leaf.
    report = jaxcheck.check(mlp_loss, params, x, batch_size=4)
    assert report.ok
    assert engine.compilations() - before == len(params)


def test_evaluations_do_not_depend_on_batch_size():
    params, x = mlp()
    with jax.enable_x64(True):
        p = pytree.split(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params))
        a = pytree.split((x.astype(jnp.float64),), check_floats=False)
        problem = Problem(mlp_loss, p.structure, a.structure)
        position = p.checked[p.paths.index("['w1']")]
        idx = np.arange(15)
        values = np.linspace(-1, 1, 15)
        outs = [engine.evaluate(problem, position, p.dynamic, a.dynamic, idx, values, b)
                for b in (1, 4, 16)]
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-13)
    np.testing.assert_allclose(outs[0], outs[2], rtol=1e-13)


def test_batch_lowered_until_compiled_temporaries_fit_budget(monkeypatch):
    # A 1e6-parameter leaf: the compiled program of a large batch would need ~GBs (sort
    # has no local rule in `local_changes`, so each perturbation gets its own copy of w).
    def loss(w, x):
        return jnp.sum(jnp.tanh(x @ jnp.sort(w, axis=0)) ** 2)

    with jax.enable_x64(True):
        p = pytree.split(jnp.ones((1000, 1000)) / 1000)
        a = pytree.split((jnp.ones((4, 1000)),), check_floats=False)
        problem = Problem(loss, p.structure, a.structure)
        monkeypatch.setattr(engine, "memory_budget", lambda device: 100 * 2**20)
        plan = engine.program(engine.EntryLoss(problem, p.checked[0]),
                              (tuple(p.dynamic), tuple(a.dynamic)), 64)
    assert plan.temp_bytes <= 100 * 2**20
    assert 1 <= plan.batch < 64


def test_a_local_change_needs_no_copy_of_the_leaf_per_perturbation():
    def loss(w, x):
        return jnp.sum(jnp.tanh(x @ w) ** 2)

    with jax.enable_x64(True):
        p = pytree.split(jnp.ones((1000, 1000)) / 1000)
        a = pytree.split((jnp.ones((4, 1000)),), check_floats=False)
        problem = Problem(loss, p.structure, a.structure)
        plan = engine.program(engine.EntryLoss(problem, p.checked[0]),
                              (tuple(p.dynamic), tuple(a.dynamic)), 64)
    # 64 copies of an 8 MB leaf would be 512 MB; the changed columns take kilobytes
    assert plan.batch == 64 and plan.temp_bytes < 2**20


def test_wrong_entry_found_with_a_tiny_memory_budget(monkeypatch):
    engine.clear_cache()
    monkeypatch.setattr(engine, "memory_budget", lambda device: 1)
    params, x = mlp(hidden=6, seed=2)
    report = jaxcheck.check(mlp_loss, params, x, grad_fn=wrong_grad)
    assert not report.ok
    assert [(f.path, f.index) for f in report.failures] == [("['w1']", (1, 2))]
    engine.clear_cache()


def big_leaf_loss(w):
    return jnp.sum(jnp.cos(w) * w ** 2)


def test_no_estimate_nor_output_when_not_interactive(capsys):
    # 2·2500+1 evaluations: enough to be estimated, but stderr here is not a terminal.
    report = jaxcheck.check(big_leaf_loss, jnp.linspace(-1, 1, 2500))
    assert report.ok
    assert capsys.readouterr().err == ""


def test_progress_bar_with_eta_when_asked(capsys):
    report = jaxcheck.check(big_leaf_loss, jnp.linspace(-1, 1, 2500), progress=True)
    assert report.ok
    err = capsys.readouterr().err
    assert "estimated" in err and "ETA" in err and "5001/5001 evaluations" in err
    # the compilation a first call pays is said beside the estimate
    assert re.search(r"estimated \d+s \(after \d+s compiling its programs\)", err)


def test_fewer_points_reuse_the_program_compiled_for_more():
    engine.clear_cache()
    w = np.linspace(-1.0, 1.0, 40)
    with jax.enable_x64(True):
        p = pytree.split({"w": jnp.asarray(w)})
        a = pytree.split((jnp.float64(2.0),), check_floats=False)
        problem = Problem(lambda q, x: jnp.sum(jnp.sin(q["w"]) * x), p.structure, a.structure)
        position = p.checked[0]
        before = engine.compilations()
        many = engine.evaluate(problem, position, p.dynamic, a.dynamic, np.arange(40),
                               np.zeros(40), 64)
        few = engine.evaluate(problem, position, p.dynamic, a.dynamic, np.arange(3),
                              np.ones(3), 4)
    assert engine.compilations() - before == 1
    np.testing.assert_allclose(many, 2 * np.sum(np.sin(w)) - 2 * np.sin(w), rtol=1e-13)
    np.testing.assert_allclose(few, many[:3] + 2 * np.sin(1.0), rtol=1e-13)


def test_cost_warning_recommends_fast_mode_when_estimate_is_long(monkeypatch):
    monkeypatch.setattr(progress, "WARN_SECONDS", 0.0)
    with pytest.warns(jaxcheck.CostWarning, match="mode='fast'"):
        jaxcheck.check(big_leaf_loss, jnp.linspace(-1, 1, 2500))


def test_progress_false_skips_the_estimate(monkeypatch):
    monkeypatch.setattr(progress, "WARN_SECONDS", 0.0)
    jaxcheck.check(big_leaf_loss, jnp.linspace(-1, 1, 2500), progress=False)  # no warning


def test_progress_option_must_be_bool_or_none():
    with pytest.raises(ValueError, match="progress: expected True, False or None, got 'yes'"):
        jaxcheck.check(big_leaf_loss, jnp.ones(3), progress="yes")


def test_bar_counts_evaluations_and_ends_with_newline():
    stream = io.StringIO()
    bar = progress.Bar(10, stream)
    bar.advance(4)
    bar.advance(8)     # more than announced: the total grows
    bar.close()
    text = stream.getvalue()
    assert "12/12 evaluations" in text and text.endswith("\n")


def test_durations_are_readable():
    assert progress.format_seconds(42.4) == "42s"
    assert progress.format_seconds(185) == "3m05s"
    assert progress.format_seconds(7260) == "2h01m"


def test_not_interactive_for_a_plain_stream():
    assert not progress.interactive(io.StringIO())
