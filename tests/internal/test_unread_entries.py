"""Entries of a leaf that the loss never reads (`unread_entries`, `engine.unread_mask`).

The mask must be exactly the entries outside every gathered row and every slice, found from
the concrete indices, and None (nothing skipped) wherever the leaf is read otherwise; the
engine's values must be the loss at each point (the unread ones: the loss at θ); a full check
must still find a backward pass that writes into rows the batch does not read.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcheck
from jaxcheck.evaluation import engine
from jaxcheck.inputs import pytree
from jaxcheck.inputs.problem import Problem

RNG = np.random.default_rng(3)
V, D, B, T, MAXLEN = 40, 4, 3, 5, 9


def _params():
    return {"emb": jnp.asarray(RNG.normal(0, 0.3, (V, D))),
            "pos": jnp.asarray(RNG.normal(0, 0.1, (MAXLEN, D))),
            "w": jnp.asarray(RNG.normal(0, 0.3, (D, 3)))}


def _tokens():
    return jnp.asarray(RNG.integers(0, V, (B, T)))


def _lm(p, tokens):   # an embedding lookup, positions sliced to the sequence's length
    h = p["emb"][tokens] + p["pos"][:T]
    h = h / jnp.sqrt(jnp.mean(h ** 2, -1, keepdims=True) + 1e-5)
    return jnp.sum(jnp.tanh(h @ p["w"]) ** 2)


@jax.jit
def _lookup(table, tokens):
    return jnp.take(table, tokens + 1, axis=0, mode="clip")   # shifted, clipped at the end


def _nested(p, tokens):   # the gather inside a jit, its indices computed there
    return jnp.sum(jnp.sin(_lookup(p["emb"], tokens) @ p["w"]))


def _tied(p, tokens):   # the table read whole by the output product too
    h = p["emb"][tokens]
    return jnp.sum(jax.nn.log_softmax(h @ p["emb"].T))


def _regularised(p, tokens):
    return jnp.sum(jnp.tanh(p["emb"][tokens] @ p["w"])) + 0.1 * jnp.sum(p["emb"] ** 2)


def _self_indexed(p, tokens):   # indices computed from the table itself
    rows = jnp.argmax(p["emb"], axis=0)
    return jnp.sum(p["emb"][rows] ** 2)


def _mask(fn, leaf, params, tokens):
    p = pytree.split(params)
    a = pytree.split((tokens,), check_floats=False)
    problem = Problem(fn, p.structure, a.structure)
    return engine.unread_mask(problem, sorted(params).index(leaf), p.dynamic, a.dynamic)


def test_the_unread_entries_are_the_rows_no_token_uses_and_the_positions_past_the_slice():
    with jax.enable_x64(True):
        params, tokens = _params(), _tokens()
        mask = _mask(_lm, "emb", params, tokens)
        used = np.isin(np.arange(V), np.asarray(tokens))
        assert used.sum() < V   # the test needs rows that no token uses
        np.testing.assert_array_equal(mask, np.broadcast_to(~used[:, None], (V, D)))
        np.testing.assert_array_equal(_mask(_lm, "pos", params, tokens),
                                      np.broadcast_to(np.arange(MAXLEN)[:, None] >= T,
                                                      (MAXLEN, D)))
        # the indices are data: other tokens, other rows
        other = (tokens + 7) % V
        used = np.isin(np.arange(V), np.asarray(other))
        np.testing.assert_array_equal(_mask(_lm, "emb", params, other)[:, 0], ~used)


def test_a_gather_inside_a_jit_reads_the_rows_of_its_clipped_indices():
    with jax.enable_x64(True):
        params = _params()
        tokens = jnp.asarray([[0, 5, V - 1], [5, 8, 10]])
        mask = _mask(_nested, "emb", params, tokens)
        read = np.zeros(V, bool)
        read[[1, 6, V - 1, 9, 11]] = True   # tokens + 1, V clipped to V - 1
        np.testing.assert_array_equal(mask[:, 0], ~read)


def _computed_rows(p, tokens):
    # indices from several integer operations: negative tokens counted from the end, a row
    # of padding (-100, clamped to row 0), a shift, a cast, a broadcast, a concatenation, the
    # larger of two, a reshape
    wrapped = jnp.where(tokens < 0, tokens + V, tokens)
    padded = jnp.where(tokens == -100, 0, jnp.clip(wrapped - 2, 0, V - 1))
    both = jnp.concatenate([padded, jnp.maximum(padded, 30)], axis=1).astype(jnp.int32)
    rows = jnp.broadcast_to(both[None], (2,) + both.shape).reshape(-1)
    return jnp.sum(jnp.tanh(p["emb"][rows] @ p["w"]))


@pytest.mark.parametrize("x64", [True, False], ids=["int64 tokens", "int32 tokens"])
def test_rows_read_at_indices_computed_from_the_tokens_are_those_jax_computes(x64):
    with jax.enable_x64(x64):
        tokens = jnp.asarray([[-1, 5, -100], [2, -40, 33]])
        rng = np.random.default_rng(0)   # not RNG: the later tests' draws stay theirs
        params = {"emb": jnp.asarray(rng.normal(size=(V, D))),
                  "w": jnp.asarray(rng.normal(size=(D, 3)))}
        mask = _mask(_computed_rows, "emb", params, tokens)
        t = np.asarray(tokens)
        wrapped = np.where(t < 0, t + V, t)
        padded = np.where(t == -100, 0, np.clip(wrapped - 2, 0, V - 1))
        read = np.zeros(V, bool)
        read[np.concatenate([padded, np.maximum(padded, 30)], axis=1).reshape(-1)] = True
        assert read.sum() == 5   # rows 0, 3, 30, 31, 37
        np.testing.assert_array_equal(mask[:, 0], ~read)


def _one_row(p, tokens):   # a scalar index: a dynamic slice of the table
    return jnp.sum(jnp.tanh(p["emb"][tokens[0, 0]] @ p["w"]))


def test_a_dynamic_slice_reads_the_row_at_its_start():
    with jax.enable_x64(True):
        tokens = jnp.asarray([[7, 3], [2, 2]])
        mask = _mask(_one_row, "emb", _params(), tokens)
        np.testing.assert_array_equal(mask[:, 0], np.arange(V) != 7)


def _evaluated(monkeypatch):
    """The points `engine.run` evaluates, counted."""
    evaluated = []
    run = engine.run

    def counting(kernel, shared, points, batch_size):
        evaluated.append(len(points[0]))
        return run(kernel, shared, points, batch_size)

    monkeypatch.setattr(engine, "run", counting)
    return evaluated


def test_flax_and_equinox_embeddings_evaluate_the_rows_their_tokens_read(monkeypatch):
    import equinox as eqx
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.emb = nnx.Embed(3000, 4, param_dtype=jnp.float64, rngs=rngs)
            self.out = nnx.Linear(4, 2, param_dtype=jnp.float64, rngs=rngs)

        def __call__(self, tokens):
            return jnp.sum(self.out(jnp.tanh(self.emb(tokens))) ** 2)

    def eqx_loss(embedding, tokens):   # a vmapped `weight[i]`: a gather with two start axes
        return jnp.sum(jnp.sin(jax.vmap(jax.vmap(embedding))(tokens)))

    with jax.enable_x64(True):
        tokens = jnp.asarray(RNG.integers(0, 3000, (2, 6)))
        embedding = eqx.nn.Embedding(weight=jnp.asarray(RNG.normal(size=(3000, 4))))
        for fn, model, n in ((lambda m, t: m(t), Model(nnx.Rngs(0)), 3000 * 4 + 10),
                             (eqx_loss, embedding, 3000 * 4)):
            evaluated = _evaluated(monkeypatch)
            report = jaxcheck.check(fn, model, tokens, progress=False)
            assert report.ok and report.n_components == n
            assert sum(evaluated) <= 2 * (12 * 4 + 10) + 6


@pytest.mark.parametrize("fn", [_tied, _regularised, _self_indexed])
def test_a_leaf_read_otherwise_than_by_its_rows_has_every_entry_read(fn):
    with jax.enable_x64(True):
        assert _mask(fn, "emb", _params(), _tokens()) is None
        # the other leaves are still found unread where the loss does not use them
        assert _mask(fn, "pos", _params(), _tokens()).all()


def test_the_engine_gives_the_loss_at_every_point_and_theta_at_the_unread_ones(monkeypatch):
    with jax.enable_x64(True):
        params, tokens = _params(), _tokens()
        p = pytree.split(params)
        a = pytree.split((tokens,), check_floats=False)
        problem = Problem(_lm, p.structure, a.structure)
        position = sorted(params).index("emb")
        indices = np.arange(V * D)
        values = np.asarray(params["emb"]).reshape(-1) + 1e-3
        engine.clear_cache()
        skipped = engine.evaluate(problem, position, p.dynamic, a.dynamic, indices, values, 16)
        unread = engine.unread_mask(problem, position, p.dynamic, a.dynamic).reshape(-1)
        monkeypatch.setattr(engine, "unread_mask", lambda *args: None)
        every = engine.evaluate(problem, position, p.dynamic, a.dynamic, indices, values, 16)
        np.testing.assert_allclose(skipped, every, rtol=1e-14, atol=0)
        f0 = float(_lm(params, tokens))
        np.testing.assert_allclose(skipped[unread], f0, rtol=1e-14, atol=0)
        assert np.all(skipped[unread] == skipped[unread][0])   # one evaluation, given to all
        assert not np.any(np.abs(skipped[~unread] - f0) < 1e-9)   # the read ones moved


def _wrong_rows_backward():
    """An embedding lookup whose backward pass adds each token's gradient to the next row."""
    @jax.custom_vjp
    def lookup(table, tokens):
        return table[tokens]

    def fwd(table, tokens):
        return table[tokens], (tokens, table.shape[0])

    def bwd(res, g):
        tokens, rows = res
        wrong = (tokens + 1) % rows
        return (jnp.zeros((rows, g.shape[-1]), g.dtype).at[wrong].add(g), None)

    lookup.defvjp(fwd, bwd)
    return lookup


def test_a_full_check_finds_a_backward_pass_that_writes_into_rows_no_token_reads():
    lookup = _wrong_rows_backward()

    def loss(p, tokens):
        return jnp.sum(jnp.tanh(lookup(p["emb"], tokens) @ p["w"]) ** 2)

    with jax.enable_x64(True):
        params = _params()
        tokens = jnp.asarray([[1, 2, 3], [1, 7, 9]])
        report = jaxcheck.check(loss, params, tokens, progress=False)
        assert not report.ok
        rows = {f.index[0] for f in report.failures if f.path == "['emb']"}
        # the rows read (gradient missing) and the rows written (nothing read there)
        assert {1, 2, 3, 7, 9} <= rows and {4, 8, 10} <= rows
        for f in report.failures:
            if f.index[0] in (4, 8, 10):
                assert f.numerical == 0.0 and f.analytic != 0.0


def test_a_full_check_of_a_large_vocabulary_evaluates_the_rows_its_batch_reads(monkeypatch):
    evaluated = _evaluated(monkeypatch)
    with jax.enable_x64(True):
        params = _params()
        params["emb"] = jnp.asarray(RNG.normal(0, 0.3, (5000, D)))
        tokens = jnp.asarray(RNG.integers(0, 5000, (B, T)))
        report = jaxcheck.check(_lm, params, tokens, progress=False)
        assert report.ok
        emb = report.leaf("['emb']")
        assert emb.size == 5000 * D and emb.n_fail == 0
        # 2 points per entry of the B·T rows read at most, and of the other leaves, 3 more
        # per leaf (θ, one unread point); not 2 per entry of the vocabulary
        others = sum(x.size for k, x in params.items() if k != "emb")
        assert sum(evaluated) <= 2 * (B * T * D + others) + 3 * len(params)
