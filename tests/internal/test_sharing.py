"""Leaves evaluated directly share one compiled program where it pays (`sharing`), with the
same values and verdicts as programs of their own."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcheck
from jaxcheck.evaluation import engine, local_changes, sharing
from jaxcheck.inputs import pytree
from jaxcheck.inputs.problem import Problem

RNG = np.random.default_rng(0)


def _block(p, x):
    """A small residual block: three (6,)-vectors and two (6, 6) weights, all used early."""
    h = (x - x.mean(-1, keepdims=True)) * p["g"] + p["b"]
    h = x + jnp.tanh(h @ p["w1"] + p["c"]) @ p["w2"]
    return jnp.sum(jnp.sin(h) ** 2)


def _params():
    return {"g": jnp.asarray(1 + 0.1 * RNG.normal(size=6)),
            "b": jnp.asarray(0.1 * RNG.normal(size=6)),
            "c": jnp.asarray(0.1 * RNG.normal(size=6)),
            "w1": jnp.asarray(RNG.normal(size=(6, 6)) / 3),
            "w2": jnp.asarray(RNG.normal(size=(6, 6)) / 3)}


def _problem(fn, params, x):
    p = pytree.split(params)
    a = pytree.split((x,), check_floats=False)
    return Problem(fn, p.structure, a.structure), p, a


def _no_sharing(monkeypatch):
    monkeypatch.setattr(sharing, "groups", lambda *args: [])


def test_small_leaves_used_early_share_one_program():
    with jax.enable_x64(True):
        params, x = _params(), jnp.asarray(RNG.normal(size=(4, 6)))
        problem, p, a = _problem(_block, params, x)
        engine.clear_cache()
        groups = {engine.program_leaves(problem, i, p.dynamic, a.dynamic) for i in p.checked}
    assert groups == {tuple(p.checked)}    # every leaf in one program
    params, x = _params(), jnp.asarray(RNG.normal(size=(4, 6)))
    before = engine.compilations()
    report = jaxcheck.check(_block, params, x)
    assert report.ok
    assert engine.compilations() - before == 1


def test_leaves_sharing_a_program_evaluate_the_loss_at_theta_once(monkeypatch):
    # f(θ) is the same program's value for every leaf in it: one point at θ for the program,
    # not one per leaf (at 2n points a leaf fills whole batches, and θ took a batch alone)
    points = []
    run = engine.run

    def counting(kernel, shared, pts, batch_size):
        points.append(np.asarray(pts[-1]))
        return run(kernel, shared, pts, batch_size)

    monkeypatch.setattr(engine, "run", counting)
    rng = np.random.default_rng(1)   # not RNG: the later tests' draws stay theirs
    params = {k: jnp.asarray(rng.normal(size=(6, 6) if k.startswith("w") else 6) / 3)
              for k in ("g", "b", "c", "w1", "w2")}
    x = jnp.asarray(rng.normal(size=(4, 6)))
    engine.clear_cache()
    report = jaxcheck.check(_block, params, x, grad_fn=lambda p, x: jax.grad(_block)(p, x))
    assert report.ok
    n = sum(int(v.size) for v in params.values())
    # the first pass: two points per entry and one at θ; later passes only revisit entries
    first = points[:len(params)]
    assert sum(len(v) for v in first) == 2 * n + 1
    monkeypatch.setattr(engine, "shared_program", lambda *args: None)
    points.clear()
    engine.clear_cache()
    again = jaxcheck.check(_block, params, x, grad_fn=lambda p, x: jax.grad(_block)(p, x))
    assert sum(len(v) for v in points[:len(params)]) == 2 * n + len(params)
    for a, b in zip(report.leaves, again.leaves):
        np.testing.assert_array_equal(a.numerical, b.numerical)
        np.testing.assert_array_equal(a.status, b.status)


def test_shared_programs_give_the_values_and_verdicts_of_programs_of_their_own(monkeypatch):
    params, x = _params(), jnp.asarray(RNG.normal(size=(4, 6)))

    def wrong(p, x):   # one entry of w1's gradient 1% off
        g = jax.grad(_block)(p, x)
        return {**g, "w1": g["w1"].at[2, 3].multiply(1.01)}

    with jax.enable_x64(True):
        problem, p, a = _problem(_block, jax.tree.map(lambda v: v.astype(jnp.float64), params),
                                 x.astype(jnp.float64))
        idx = np.arange(36)
        values = np.linspace(-1, 1, 36)
        position = p.checked[p.paths.index("['w1']")]
        engine.clear_cache()
        shared = engine.evaluate(problem, position, p.dynamic, a.dynamic, idx, values, 16)
        assert len(engine.program_leaves(problem, position, p.dynamic, a.dynamic)) > 1
    engine.clear_cache()
    shared_report = jaxcheck.check(_block, params, x, grad_fn=wrong)
    _no_sharing(monkeypatch)
    with jax.enable_x64(True):
        engine.clear_cache()
        own = engine.evaluate(problem, position, p.dynamic, a.dynamic, idx, values, 16)
        assert engine.program_leaves(problem, position, p.dynamic, a.dynamic) == (position,)
    engine.clear_cache()
    own_report = jaxcheck.check(_block, params, x, grad_fn=wrong)
    np.testing.assert_allclose(shared, own, rtol=1e-14)
    assert not shared_report.ok and not own_report.ok
    for s, o in zip(shared_report.leaves, own_report.leaves):
        assert s.path == o.path
        np.testing.assert_array_equal(s.status, o.status)
        # the same differences up to the rounding of the losses (programs fused differently)
        np.testing.assert_allclose(s.numerical, o.numerical, rtol=1e-7, atol=1e-12)


def _heavy(p, x):
    """`a` feeds a stack of wide products; `z`, as large, only a sum at the end."""
    h = x
    for _ in range(4):
        h = jnp.tanh(h @ p["a"])
    return jnp.sum(h) + jnp.sum(p["z"] ** 2)


def test_a_leaf_used_late_keeps_its_own_program_where_sharing_costs_more():
    with jax.enable_x64(True):
        params = {"a": jnp.asarray(RNG.normal(size=(128, 128)) / 12),
                  "z": jnp.asarray(RNG.normal(size=(128, 128)))}
        problem, p, a = _problem(_heavy, params, jnp.asarray(RNG.normal(size=(256, 128))))
        closed = local_changes.loss_jaxpr(problem.loss, p.dynamic, a.dynamic)
        assert sharing.groups(closed, p.dynamic, list(p.checked)) == []
        # small leaves, each as costly per point: one program
        params = {"a": jnp.ones((8, 8)), "z": jnp.ones((8, 8))}
        problem, p, a = _problem(_heavy, params, jnp.asarray(RNG.normal(size=(16, 8))))
        closed = local_changes.loss_jaxpr(problem.loss, p.dynamic, a.dynamic)
        assert sharing.groups(closed, p.dynamic, list(p.checked)) == [tuple(p.checked)]


@pytest.mark.parametrize("dtypes", [(jnp.float32, jnp.float64)])
def test_leaves_of_different_dtypes_never_share(dtypes):
    with jax.enable_x64(True):
        params = {"u": jnp.ones(3, dtypes[0]), "v": jnp.ones(3, dtypes[1])}
        problem, p, a = _problem(lambda q, x: jnp.sum(q["u"] * q["v"] * x), params,
                                 jnp.ones(3))
        closed = local_changes.loss_jaxpr(problem.loss, p.dynamic, a.dynamic)
        assert sharing.groups(closed, p.dynamic, list(p.checked)) == []
