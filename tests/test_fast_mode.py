import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcheck
from jaxcheck._directions import _vector
from jaxcheck._group_testing import localise


def _mlp_problem(n_in=100, n_hidden=120, batch=8, seed=0):
    """tanh layer + linear readout: 100*120 + 120 + 120 + 1 = 12,361 params."""
    rng = np.random.default_rng(seed)
    params = {
        "W": jnp.asarray(rng.standard_normal((n_in, n_hidden)) / np.sqrt(n_in), jnp.float32),
        "b": jnp.asarray(0.1 * rng.standard_normal(n_hidden), jnp.float32),
        "v": jnp.asarray(rng.standard_normal(n_hidden) / np.sqrt(n_hidden), jnp.float32),
        "c": jnp.asarray(0.3, jnp.float32),
    }
    x = jnp.asarray(rng.standard_normal((batch, n_in)), jnp.float32)
    y = jnp.asarray(rng.standard_normal(batch), jnp.float32)

    def loss(p, x, y):
        h = jnp.tanh(x @ p["W"] + p["b"])
        return 0.5 * jnp.mean((h @ p["v"] + p["c"] - y) ** 2)

    return loss, params, (x, y)


def _with(loss, edit):
    def grad_fn(p, *args):
        g = jax.grad(loss)(p, *args)
        return edit(g)
    return grad_fn


def test_correct_model_passes_with_few_evaluations():
    loss, params, args = _mlp_problem()
    report = jaxcheck.check(loss, params, *args, mode="fast")
    assert report.ok and report.failures == ()
    assert all(leaf.directions.k == 20 and leaf.directions.n_fail == 0 for leaf in report.leaves)
    # 20 directions x 2 points + the Taylor ladder per leaf, far below 2 per component
    assert report.info["evaluations"] < 0.05 * 2 * report.n_components
    assert "checked by 20 random directions" in str(report)


def test_localises_single_entry_off_by_one_percent_among_12k():
    loss, params, args = _mlp_problem()
    grad_fn = _with(loss, lambda g: {**g, "W": g["W"].at[37, 91].multiply(1.01)})
    report = jaxcheck.check(loss, params, *args, grad_fn=grad_fn, mode="fast")
    assert not report.ok
    assert [(f.path, f.index) for f in report.failures] == [("['W']", (37, 91))]
    f = report.failures[0]
    assert f.analytic == pytest.approx(1.01 * f.numerical, rel=1e-6)
    assert [leaf.path for leaf in report.leaves if not leaf.ok] == ["['W']"]
    # O(log n) tests, not O(n): far fewer evaluations than full mode's 2 per component
    assert report.info["evaluations"] < 0.25 * 2 * report.n_components
    assert "['W'][37, 91]" in str(report)


def test_localises_several_wrong_entries_in_one_leaf():
    loss, params, args = _mlp_problem()
    wrong = [(3, 5), (50, 60), (99, 119)]

    def edit(g):
        W = g["W"]
        for i, j in wrong:
            W = W.at[i, j].add(0.05 * jnp.abs(W).max())
        return {**g, "W": W}
    report = jaxcheck.check(loss, params, *args, grad_fn=_with(loss, edit), mode="fast")
    assert sorted(f.index for f in report.failures) == wrong


def test_catches_whole_wrong_leaf_that_cancels_in_one_direction():
    loss, params, args = _mlp_problem()
    n = params["W"].size
    with jax.enable_x64(True):   # direction 0 of leaf 0 (['W']), as fast mode draws it
        theta = jnp.asarray(params["W"], jnp.float64).reshape(-1)
        u = np.asarray(_vector(jnp.uint32(0), jnp.uint32(0), jnp.int32(0), jnp.int32(0),
                               jnp.int32(n), theta))
    e = np.random.default_rng(1).standard_normal(n)
    e -= (e @ u) / (u @ u) * u            # an error in every entry, invisible along u
    e *= 1e-2 / np.abs(e).max()
    assert abs(e @ u) < 1e-12
    grad_fn = _with(loss, lambda g: {**g, "W": g["W"] + e.reshape(g["W"].shape)})
    report = jaxcheck.check(loss, params, *args, grad_fn=grad_fn, mode="fast", localise=3)
    d = report.leaf("['W']").directions
    assert d.numbers[0] == 0 and d.status[0] == 0      # the cancelling direction passes ...
    assert d.n_fail >= 15                               # ... the other random ones do not
    assert not report.ok and len(report.failures) >= 3  # stops after `localise` found
    assert all(f.path == "['W']" for f in report.failures)


def test_same_seed_same_directions_other_seed_other_directions():
    loss, params, args = _mlp_problem(n_in=10, n_hidden=12)
    a = jaxcheck.check(loss, params, *args, mode="fast", seed=7, directions=5)
    b = jaxcheck.check(loss, params, *args, mode="fast", seed=7, directions=5)
    c = jaxcheck.check(loss, params, *args, mode="fast", seed=8, directions=5)
    ua, ub, uc = (r.leaf("['W']").directions.analytic for r in (a, b, c))
    np.testing.assert_array_equal(ua, ub)
    assert not np.allclose(ua, uc)
    assert a.leaf("['W']").directions.k == 5


def test_taylor_order_two_for_correct_gradient_one_for_wrong():
    loss, params, args = _mlp_problem(n_in=10, n_hidden=12)
    good = jaxcheck.check(loss, params, *args, mode="fast", directions=2)
    bad = jaxcheck.check(loss, params, *args, grad_fn=_with(loss, lambda g: {**g, "W": 2 * g["W"]}),
                         mode="fast", directions=2)
    t_good, t_bad = good.leaf("['W']").taylor, bad.leaf("['W']").taylor
    assert t_good.order == pytest.approx(2.0, abs=0.2) and t_good.consistent
    assert t_bad.order == pytest.approx(1.0, abs=0.2) and t_bad.consistent is False


def test_group_testing_costs_order_b_log_n_tests():
    n, wrong = 1 << 20, {12345, 800000}
    tested = []

    def dirty(ranges):
        tested.extend(ranges)
        return [any(lo <= w < hi for w in wrong) for lo, hi in ranges]

    loc = localise(n, dirty, lambda r: sum(r[0] <= w < r[1] for w in wrong), block=40,
                   limit=10)
    assert loc.found == 2 and loc.unexplored == ()
    assert all(any(lo <= w < hi for lo, hi in loc.blocks) for w in wrong)
    assert len(tested) <= 2 * len(wrong) * np.log2(n)


def test_directions_option_is_validated():
    with pytest.raises(ValueError, match="directions: expected a positive int, got 0"):
        jaxcheck.check(lambda w: jnp.sum(w ** 2), jnp.ones(3), mode="fast", directions=0)


def test_rows_grouped_by_direction_match_direction_vector_and_row_order():
    from jaxcheck._directions import Directions
    from jaxcheck._engine import Problem
    from jaxcheck._parameters import split
    with jax.enable_x64(True):
        n = 1000
        c = np.random.default_rng(0).standard_normal(n)
        theta = jnp.linspace(-3.0, 3.0, n)
        p, a = split(theta), split((), check_floats=False)
        problem = Problem(lambda w: jnp.sum(jnp.asarray(c) * w), p.structure, a.structure)
        dirs = Directions(problem, 0, tuple(p.dynamic), tuple(a.dynamic), 0, 3, c,
                          np.zeros(n), batch_size=4)
        # 3 directions, 7 steps of direction 1 (more than a batch), one single-entry range
        numbers = np.array([1, 0, 1, 2, 1, 1, 0, 1, 1, 1])
        lo = np.array([0, 10, 0, 5, 0, 0, 10, 0, 0, 0])
        hi = np.array([n, 500, n, 6, n, n, 500, n, n, n])
        t = np.linspace(-1e-3, 1e-3, numbers.size)
        r = dirs.along(numbers, lo, hi, t)
        perm = np.random.default_rng(1).permutation(numbers.size)
        rp = dirs.along(numbers[perm], lo[perm], hi[perm], t[perm])
        for x, xp in zip(r, rp):
            np.testing.assert_array_equal(x[perm], xp)
        f0 = float(jnp.sum(jnp.asarray(c) * theta))
        for i in range(numbers.size):
            u = dirs.vector(int(numbers[i]), int(lo[i]), int(hi[i]))
            assert np.count_nonzero(u) == hi[i] - lo[i]
            assert r.gu[i] == pytest.approx(u @ c, rel=1e-12)
            assert r.u_sum[i] == u[lo[i]]  # Σu where the range has one component
            if hi[i] - lo[i] == 1:
                assert r.u_sum[i] == u.sum()
            step = np.asarray(theta + t[i] * u) - np.asarray(theta)
            assert r.g_step[i] == pytest.approx(c @ step, rel=1e-9, abs=1e-15)
            assert r.f[i] - f0 == pytest.approx(r.g_step[i], abs=1e-12)
        assert r.u_sum[3] == dirs.vector(2, 5, 6)[5]
        assert dirs.evaluations == 2 * numbers.size
