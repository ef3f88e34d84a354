"""A table's row changes only the examples whose tokens use it (`local_changes.Subset`,
`unread_entries.examples_reaching_rows`, `engine.example_plan`).

Which examples reach each row must be exactly those whose indices use it; a point evaluated on
those examples alone must give the loss at the perturbed point, as the direct evaluation does,
for a tied language-model block, an untied lookup and a loss that mixes the examples (where the
rule gives way to the dense evaluation); the engine must use it only where it pays, and a full
check must still find a backward pass that is wrong in one row.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcheck
from jaxcheck.evaluation import engine, unread_entries
from jaxcheck.evaluation import local_changes as lc
from jaxcheck.inputs import pytree
from jaxcheck.inputs.problem import Problem

RNG = np.random.default_rng(11)
V, D, B, T, HEADS = 48, 16, 6, 5, 2


def _params():
    return {"tok": jnp.asarray(RNG.normal(0, 0.3, (V, D))),
            "pos": jnp.asarray(RNG.normal(0, 0.1, (T, D))),
            "wq": jnp.asarray(RNG.normal(0, 0.25, (D, D))),
            "wk": jnp.asarray(RNG.normal(0, 0.25, (D, D))),
            "wv": jnp.asarray(RNG.normal(0, 0.25, (D, D))),
            "w": jnp.asarray(RNG.normal(0, 0.25, (D, 2 * D)))}


def _tokens():
    # rows 0-11 in one sequence each, 12-15 in two, 17 in four, 16 in all six; 18-47 in none
    return jnp.asarray([[0, 1, 16, 17, 12], [2, 3, 16, 17, 13], [4, 5, 16, 17, 14],
                        [6, 7, 16, 17, 15], [8, 9, 16, 15, 12], [10, 11, 16, 14, 13]])


def _layer_norm(h):
    m = jnp.mean(h, -1, keepdims=True)
    return (h - m) / jnp.sqrt(jnp.mean((h - m) ** 2, -1, keepdims=True) + 1e-5)


def _block(p, tokens):   # tied embedding, causal attention over heads, MLP, next-token loss
    h = p["tok"][tokens] + p["pos"][None]
    a = _layer_norm(h)

    def heads(z):
        return z.reshape(B, T, HEADS, D // HEADS).transpose(0, 2, 1, 3)

    q, k, v = heads(a @ p["wq"]), heads(a @ p["wk"]), heads(a @ p["wv"])
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(D // HEADS)
    scores = jnp.where(jnp.tril(jnp.ones((T, T), bool)), scores, -1e9)
    h = h + (jax.nn.softmax(scores, -1) @ v).transpose(0, 2, 1, 3).reshape(B, T, D)
    h = h + jnp.tanh(_layer_norm(h) @ p["w"]) @ p["w"].T
    logp = jax.nn.log_softmax(h @ p["tok"].T, -1)
    return -jnp.mean(jnp.take_along_axis(logp, jnp.roll(tokens, -1, 1)[..., None], -1))


def _untied(p, tokens):   # a lookup, features mixed, a sum over positions then examples
    h = jnp.tanh(p["tok"][tokens] @ p["w"])
    return jnp.sum(jnp.sum(h, axis=1) ** 2) + jnp.sum(p["pos"] ** 2)


def _batch_mixed(p, tokens):   # a norm over the batch's examples right after the lookup
    h = p["tok"][tokens]
    h = (h - jnp.mean(h, axis=0)) / jnp.sqrt(jnp.var(h, axis=0) + 1e-3)
    return jnp.sum(jnp.tanh(h @ p["w"]) ** 2) + jnp.sum(p["pos"] ** 2)


@jax.jit
def _lookup(table, tokens):
    return jnp.take(table, tokens + 1, axis=0, mode="clip")   # shifted, clipped at the end


def _jitted(p, tokens):   # the lookup inside a jit, its indices computed there
    return jnp.sum(jnp.sin(_lookup(p["tok"], tokens) @ p["w"])) + jnp.sum(p["tok"] ** 2)


def _two_lookups(p, tokens):
    return jnp.sum(jnp.tanh(p["tok"][tokens] @ p["w"])) + jnp.sum(p["tok"][tokens + 1] ** 2)


def _problem(fn, params, tokens):
    p = pytree.split(params)
    a = pytree.split((tokens,), check_floats=False)
    return Problem(fn, p.structure, a.structure), p.dynamic, a.dynamic


def _reached(fn, params, tokens):
    problem, pd, ad = _problem(fn, params, tokens)
    closed = lc.loss_jaxpr(problem.loss, pd, ad)
    position = sorted(params).index("tok")
    reads = unread_entries.reads_of(closed.jaxpr, closed.consts,
                                    [k == position for k in range(len(closed.jaxpr.invars))],
                                    other_uses=True)
    return unread_entries.examples_reaching_rows(reads, list(pd) + list(ad), V)


def test_the_examples_reaching_a_row_are_those_whose_tokens_use_it():
    with jax.enable_x64(True):
        params, tokens = _params(), _tokens()
        expected = np.array([[v in row for row in np.asarray(tokens)] for v in range(V)])
        for fn in (_block, _untied, _batch_mixed):
            np.testing.assert_array_equal(_reached(fn, params, tokens), expected)
        shifted = np.minimum(np.asarray(tokens) + 1, V - 1)
        np.testing.assert_array_equal(_reached(_jitted, params, tokens),
                                      [[v in row for row in shifted] for v in range(V)])
        assert _reached(_two_lookups, params, tokens) is None


def _at_entries(fn, examples):
    """The loss at each entry of the rows reaching at most `examples` examples moved by
    1e-3, evaluated on those examples (`at_entry(..., examples)`) and directly."""
    params, tokens = _params(), _tokens()
    problem, pd, ad = _problem(fn, params, tokens)
    position = sorted(params).index("tok")
    closed = lc.loss_jaxpr(problem.loss, pd, ad)
    traced = lc.Traced(closed, position)
    counts = _reached(fn, params, tokens).sum(axis=1)
    rows = np.flatnonzero(counts <= examples)
    index = (rows[:, None] * D + np.arange(D)).reshape(-1).astype(np.int32)
    value = np.asarray(params["tok"]).reshape(-1)[index] + 1e-3
    few = jax.jit(jax.vmap(lambda i, v: traced.at_entry(pd, ad, i, v, examples)))(index, value)

    def direct(i, v):
        dynamic = list(pd)
        dynamic[position] = pd[position].reshape(-1).at[i].set(v).reshape(V, D)
        return problem.loss(dynamic, ad)

    every = jax.jit(jax.vmap(direct))(index, value)
    return np.asarray(few), np.asarray(every), float(problem.loss(pd, ad)), counts[rows]


@pytest.mark.parametrize("fn", [_block, _untied, _jitted, _batch_mixed])
@pytest.mark.parametrize("examples", [1, 2, 4])
def test_a_point_on_the_examples_its_row_reaches_is_the_loss_at_that_point(fn, examples):
    with jax.enable_x64(True):
        few, every, f0, counts = _at_entries(fn, examples)
        assert counts.max() == examples
        np.testing.assert_allclose(few, every, rtol=1e-13, atol=0)
        # every row reached by some example moved the loss (rows reached by none: the tied
        # output alone, or nothing)
        moved = np.abs(few - f0) > 1e-12 * abs(f0)
        assert moved[np.repeat(counts > 0, D)].all()


def _evaluated_kernels(monkeypatch):
    kernels = []
    run = engine.run

    def recording(kernel, shared, points, batch_size):
        kernels.append((kernel, len(points[0])))
        return run(kernel, shared, points, batch_size)

    monkeypatch.setattr(engine, "run", recording)
    return kernels


def test_the_engine_evaluates_the_rows_reaching_few_examples_on_those_alone(monkeypatch):
    with jax.enable_x64(True):
        params, tokens = _params(), _tokens()
        problem, pd, ad = _problem(_block, params, tokens)
        position = sorted(params).index("tok")
        engine.clear_cache()
        # so small a table does not repay compiling a program of its own, which the screen
        # says before the path is traced...
        traced = []   # the subset path traced (`at_entry` with examples)
        at_entry = lc.Traced.at_entry

        def spied(self, *args):
            traced.append(args[4:])
            return at_entry(self, *args)
        monkeypatch.setattr(lc.Traced, "at_entry", spied)
        assert engine.example_plan(problem, position, pd, ad) is None
        assert not [a for a in traced if a and a[0]]
        # ...which a table of more rows does (compiling counted as free here)
        monkeypatch.setattr(lc, "COMPILE_SECONDS_PER_EQUATION", 0.0)
        engine.clear_cache()
        plan = engine.example_plan(problem, position, pd, ad)
        assert [a for a in traced if a and a[0]]
        # 42 rows reached by at most 1 of the 6 examples, 4 by 2, 2 by more: K = 1 evaluates
        # 42·1 + 6·6 = 78 examples a feature, K = 2 46·2 + 2·6 = 104, the whole batch 288
        assert plan is not None and plan.examples == 1
        counts = _reached(_block, params, tokens).sum(axis=1)
        np.testing.assert_array_equal(plan.rows, counts <= 1)
        indices = np.arange(V * D)
        values = np.asarray(params["tok"]).reshape(-1) - 1e-3
        kernels = _evaluated_kernels(monkeypatch)
        few = engine.evaluate(problem, position, pd, ad, indices, values, 32)
        used = {getattr(k, "examples", 0): n for k, n in kernels}
        assert used[1] == int(plan.rows.sum()) * D
        monkeypatch.setattr(engine, "example_plan", lambda *args: None)
        every = engine.evaluate(problem, position, pd, ad, indices, values, 32)
        np.testing.assert_allclose(few, every, rtol=1e-13, atol=0)


def test_the_engine_does_not_evaluate_on_examples_where_they_are_mixed_at_once(monkeypatch):
    monkeypatch.setattr(lc, "COMPILE_SECONDS_PER_EQUATION", 0.0)
    with jax.enable_x64(True):
        params, tokens = _params(), _tokens()
        problem, pd, ad = _problem(_batch_mixed, params, tokens)
        engine.clear_cache()
        assert engine.example_plan(problem, sorted(params).index("tok"), pd, ad) is None
        problem, pd, ad = _problem(_block, params, tokens)
        assert engine.example_plan(problem, sorted(params).index("tok"), pd, ad) is not None


def test_a_full_check_finds_a_wrong_row_of_a_tied_table_evaluated_on_few_examples(
        monkeypatch):
    monkeypatch.setattr(lc, "COMPILE_SECONDS_PER_EQUATION", 0.0)

    def wrong_grad(p, tokens):   # row 3 (in one sequence) has its gradient off by 1e-3
        g = jax.grad(_block)(p, tokens)
        return {**g, "tok": g["tok"].at[3].multiply(1.001)}

    with jax.enable_x64(True):
        params, tokens = _params(), _tokens()
        engine.clear_cache()
        problem, pd, ad = _problem(_block, params, tokens)
        assert engine.example_plan(problem, sorted(params).index("tok"), pd, ad) is not None
        assert jaxcheck.check(_block, params, tokens, progress=False).ok
        report = jaxcheck.check(_block, params, tokens, grad_fn=wrong_grad, progress=False)
        rows = {f.index[0] for f in report.failures if f.path == "['tok']"}
        assert not report.ok and rows == {3}
