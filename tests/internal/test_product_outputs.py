"""A leaf's first pass through the values its uses reach while they stay affine in it
(`product_outputs`).

Each use is followed through products, quotients, sums, negations, gathers and reshapes while
the value has one use; the loss with that value given is the loss (the direct evaluation);
its derivatives mapped back through the chain are the leaf's gradient; the bounds of the
rounding map bounds to bounds and variances to variances (checked against the chain's
Jacobian, formed explicitly). In a full check, a wrong entry of such a leaf is found exactly.
The programs of the path, run once per check, compile with the options for that (last tests).
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcheck
from jaxcheck.evaluation import engine
from jaxcheck.evaluation import local_changes as lc
from jaxcheck.evaluation import product_outputs as po
from jaxcheck.inputs.problem import Problem
from jaxcheck.inputs.pytree import split
from jaxcheck.plan import gradients

VOCAB, T, B, HEADS = 11, 5, 3, 2


def _block(p, tokens):
    """A transformer block with every kind of affine step: a gather and a broadcast sum (the
    embeddings), products, a reshape and transpose to heads, a quotient by a constant, a
    subtraction and a negation, a product with a fixed mask, a bias, a tied output; and leaves
    whose first use is not affine (a square, a tanh)."""
    b, t = tokens.shape
    d = p["wq"].shape[0]
    h = p["tok"][tokens] + p["pos"]
    a = (h - h.mean(-1, keepdims=True)) / jnp.sqrt(h.var(-1, keepdims=True) + 1e-5) * p["g"]

    def heads(z):
        return z.reshape(b, t, HEADS, d // HEADS).transpose(0, 2, 1, 3)

    q, k, v = heads(a @ p["wq"]), heads(a @ p["wk"]), heads(a @ p["wv"])
    s = jnp.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(d // HEADS)
    o = jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(s, -1), v)
    h = h - o.transpose(0, 2, 1, 3).reshape(b, t, d) @ p["wo"]
    mask = jnp.asarray(np.arange(2 * d) % 3 != 0, h.dtype)
    z = -(jnp.tanh(h) @ p["w1"]) * mask + p["b1"]
    h = h + jnp.tanh(z) @ p["w2"]
    logp = jax.nn.log_softmax(h @ p["tok"].T, -1)
    return (-jnp.mean(jnp.take_along_axis(logp, tokens[..., None], -1))
            + 0.01 * jnp.sum(p["r"] ** 2) + jnp.sum(jnp.tanh(p["u"])))


def _params(d, seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"tok": (VOCAB, d), "pos": (T, d), "g": (d,), "wq": (d, d), "wk": (d, d),
              "wv": (d, d), "wo": (d, d), "w1": (d, 2 * d), "b1": (2 * d,), "w2": (2 * d, d),
              "r": (3,), "u": (4,)}
    return {k: jnp.asarray(rng.normal(0, 1 / np.sqrt(s[0]), s)) for k, s in shapes.items()}


def _tokens(seed=1):
    return jnp.asarray(np.random.default_rng(seed).integers(0, VOCAB, (B, T)))


def _traced(d=8):
    p, tokens = _params(d), _tokens()
    names = sorted(p)
    pd, ad = tuple(p[k] for k in names), (tokens,)

    def loss(param_dynamic, arg_dynamic):
        return _block(dict(zip(names, param_dynamic)), *arg_dynamic)

    return names, pd, ad, loss, lc.loss_jaxpr(loss, pd, ad)


def _plan(closed, names, leaf):
    position = names.index(leaf)
    found = po.cuts(closed.jaxpr, position)
    n = len(closed.jaxpr.invars) - 1
    return po.Plan(closed, position, found,
                   tuple(po.output_problem(closed, c, n, 1) for c in found))


AFFINE = ("tok", "pos", "wq", "wk", "wv", "wo", "w1", "b1", "w2", "g")


def test_each_use_is_followed_to_the_value_where_it_stops_being_affine():
    with jax.enable_x64(True):
        names, _, _, _, closed = _traced()
        ends = {k: [c.last for c in po.cuts(closed.jaxpr, names.index(k))] for k in AFFINE}
        assert po.cuts(closed.jaxpr, names.index("r")) is None    # r·r is not affine
        assert po.cuts(closed.jaxpr, names.index("u")) is None    # tanh first
    eqns = closed.jaxpr.eqns
    # the queries' and keys' weights reach the attention scores, after their product
    assert ends["wq"] == ends["wk"]
    assert eqns[ends["wq"][0]].primitive.name in ("div", "dot_general")
    # the values' and the output projection's weights, the residual stream after it
    assert ends["wv"] == ends["wo"]
    assert eqns[ends["wo"][0]].primitive.name == "sub"
    # the MLP's first product with its mask, negation and bias; the second, the logits
    assert ends["w1"] == ends["b1"]
    assert eqns[ends["w1"][0]].primitive.name == "add"
    assert ends["w2"][0] == ends["tok"][1]
    # a tied table: its gather (summed with the positions) and the output product
    assert len(ends["tok"]) == 2 and ends["tok"][0] == ends["pos"][0]


@pytest.mark.parametrize("leaf", AFFINE)
def test_the_values_derivatives_mapped_back_are_the_leafs_gradient(leaf):
    with jax.enable_x64(True):
        names, pd, ad, loss, closed = _traced()
        plan = _plan(closed, names, leaf)
        (outputs,), _ = po.outputs((plan,), pd, ad)
        slopes = []
        for problem, y in zip(plan.problems, outputs):
            # the loss with the value given, at the value itself: the loss as written
            given = (*pd, y)
            np.testing.assert_allclose(problem.loss(given, ad), loss(pd, ad), rtol=1e-14)
            slopes.append(jax.grad(lambda y, p=problem: p.loss((*pd, y), ad))(y).reshape(-1))
        zeros = [jnp.zeros_like(x) for x in slopes]
        _, operands = po.outputs((plan,), pd, ad)
        ((value, _, _),) = po.transposed((plan,), (pd[plan.position],), operands,
                                         [tuple(slopes) + tuple(zeros)])
        want = jax.grad(loss)(pd, ad)[names.index(leaf)].reshape(-1)
        np.testing.assert_allclose(value, want, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("leaf", ["tok", "wq", "wo", "w1"])
def test_the_rounding_maps_take_magnitudes_and_squares_of_the_chains_jacobian(leaf):
    with jax.enable_x64(True):
        names, pd, ad, _, closed = _traced()
        plan = _plan(closed, names, leaf)
        position = names.index(leaf)
        rng = np.random.default_rng(2)

        def values(w):   # each use's value as a function of the leaf, the rest at θ
            moved = list(pd)
            moved[position] = w
            return [y.reshape(-1) for y in po.outputs((plan,), tuple(moved), ad)[0][0]]

        jacobians = jax.jacfwd(values)(pd[position])
        # the tied table's logits also depend on it through its gather: its first use alone
        used = [k == 0 or leaf != "tok" for k in range(len(jacobians))]
        r = [jnp.asarray(rng.uniform(0, 1, j.shape[0]) * u) for j, u in zip(jacobians, used)]
        d = [jnp.asarray(rng.normal(size=j.shape[0]) * u) for j, u in zip(jacobians, used)]
        _, operands = po.outputs((plan,), pd, ad)
        ((value, bound, variance),) = po.transposed((plan,), (pd[position],), operands,
                                                    [tuple(d) + tuple(r)])
        flat = [j.reshape(j.shape[0], -1) for j in jacobians]
        np.testing.assert_allclose(value, sum(j.T @ x for j, x in zip(flat, d)), rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_allclose(bound, sum(jnp.abs(j).T @ x for j, x in zip(flat, r)),
                                   rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(variance, sum((j * j).T @ (x * x) for j, x in zip(flat, r)),
                                   rtol=1e-10, atol=1e-12)


def _check(p, tokens, **kw):
    return jaxcheck.check(_block, p, tokens, progress=False, **kw)


@pytest.fixture
def repeated_calls(monkeypatch):
    """Checks weighed as if called many times: every value's program repays its compilation
    (the block is small: on one call, its programs' compilation would outweigh the points
    they save)."""
    monkeypatch.setattr(lc, "CALLS", 10_000)
    engine.clear_cache()
    yield
    engine.clear_cache()


def _taken(p, tokens):
    names = sorted(p)
    pd, ad = tuple(p[k] for k in names), (tokens,)
    problem = Problem(_block, split(p).structure, split((tokens,), False).structure)
    return {k for k in names
            if engine.output_plan(problem, names.index(k), pd, ad) is not None}


def test_full_mode_takes_the_values_for_the_attention_and_finds_a_wrong_entry_exactly(
        repeated_calls):
    with jax.enable_x64(True):
        p, tokens = _params(32), _tokens()
        assert _check(p, tokens).ok
        assert {"wq", "wk", "wv", "wo"} <= _taken(p, tokens)
        for leaf, index in (("wq", (3, 5)), ("wo", (0, 7))):
            g = jax.grad(_block)(p, tokens)
            g[leaf] = g[leaf].at[index].multiply(1 + 1e-3)
            rep = _check(p, tokens, grad_fn=lambda *_, g=g: g)
            assert not rep.ok
            assert [(f.path, f.index) for f in rep.failures] == [(f"['{leaf}']", index)]


def test_a_whole_leaf_off_by_a_small_factor_fails_through_the_values(repeated_calls):
    with jax.enable_x64(True):
        p, tokens = _params(32), _tokens()
        g = jax.grad(_block)(p, tokens)
        g["wk"] = g["wk"] * (1 + 1e-4)
        rep = _check(p, tokens, grad_fn=lambda *_: g)
        assert "wk" in _taken(p, tokens)
        assert not rep.ok
        assert {f.path for f in rep.failures} == {"['wk']"}
        assert len(rep.failures) > 0.5 * p["wk"].size


# The XLA options each program compiles with on a CPU (`_compiler`): the programs a check runs
# once (the gradient under test, the values at params and their transposes) at LLVM's level 0,
# the batch programs at level 1, every program's code in one piece.
LEVEL, SPLIT = "xla_backend_optimization_level", "xla_cpu_parallel_codegen_split_count"


@pytest.fixture
def compiles(monkeypatch):
    """Every program compiled while the test runs, as (module name, compiler options)."""
    seen = []
    original = jax.stages.Lowered.compile

    def recording(self, compiler_options=None, **kw):
        name = re.match(r"module @(\S+)", self.as_text()).group(1)
        seen.append((name, dict(compiler_options or {})))
        return original(self, compiler_options, **kw)
    monkeypatch.setattr(jax.stages.Lowered, "compile", recording)
    jax.clear_caches()
    return seen


def _levels(seen, name):
    return [opts.get(LEVEL) for n, opts in seen if n == name]


def _skip_without_options(seen):
    if not any(opts for _, opts in seen):
        pytest.skip("this XLA (or backend) takes XLA's defaults for every program")


def _gradient_levels():
    """The levels the autodiff gradient's program has been compiled at (it is jitted with its
    options, not lowered: `_compiler.Jitted` keeps a `jax.jit` per choice of options)."""
    return {dict(key).get(LEVEL) for key in gradients._autodiff_gradient._by_options if key}


def test_full_mode_compiles_what_runs_once_at_level_0_and_batches_at_level_1(
        compiles, monkeypatch):
    monkeypatch.setattr(lc, "CALLS", 10_000)   # values taken on this small block
    engine.clear_cache()
    with jax.enable_x64(True):
        rep = jaxcheck.check(_block, _params(32), _tokens(), progress=False)
    engine.clear_cache()
    assert rep.ok
    _skip_without_options(compiles)
    assert _gradient_levels() == {0}
    # the values at params with their chains' operands, and the transposes
    assert _levels(compiles, "jit__call").count(0) >= 2
    batches = _levels(compiles, "jit_f")
    assert batches and set(batches) == {1}
    assert {opts.get(SPLIT) for _, opts in compiles} == {1}


def test_fast_mode_compiles_its_batch_programs_at_level_1(compiles):
    engine.clear_cache()
    with jax.enable_x64(True):
        rep = jaxcheck.check(_block, _params(16), _tokens(), mode="fast", progress=False)
    engine.clear_cache()
    assert rep.ok
    _skip_without_options(compiles)
    joint = _levels(compiles, "jit__call")
    assert joint and set(joint) == {1}
    assert _gradient_levels() == {0}
