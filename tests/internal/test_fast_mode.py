import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcheck
from jaxcheck.evaluation.directions import direction_vector
from jaxcheck.numerics.group_testing import localise


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


@pytest.fixture
def own_tests_only(monkeypatch):
    """Each leaf tested on its own from the start (no joint test first)."""
    monkeypatch.setattr(jaxcheck.numerics.fast, "JOINT_MIN_SIZE", 1 << 62)


def _with(loss, edit):
    def grad_fn(p, *args):
        g = jax.grad(loss)(p, *args)
        return edit(g)
    return grad_fn


@pytest.fixture
def joint_for_small_params(monkeypatch):
    """The joint test for the small params of these tests (the default, kept explicit)."""
    monkeypatch.setattr(jaxcheck.numerics.fast, "JOINT_MIN_SIZE", 0)


def test_small_params_of_several_leaves_take_the_joint_test_and_one_leaf_its_own():
    # one program holds the joint and Taylor tests of every leaf: cheaper to compile than a
    # program per leaf, at any size
    loss, params, args = _mlp_problem()
    report = jaxcheck.check(loss, params, *args, mode="fast")
    assert report.ok and report.info["joint"]["passed"]
    w = params["W"]
    alone = jaxcheck.check(lambda w, *a: loss({**params, "W": w}, *a), w, *args, mode="fast")
    assert alone.ok and "joint" not in alone.info
    assert alone.leaves[0].directions.k == 21 and alone.leaves[0].directions.joint == ()
    assert "checked by 21 random directions" in str(alone)


def test_correct_model_passes_the_joint_screen_with_few_evaluations(joint_for_small_params):
    loss, params, args = _mlp_problem()
    report = jaxcheck.check(loss, params, *args, mode="fast")
    assert report.ok and report.failures == ()
    paths = ("['W']", "['b']", "['c']", "['v']")
    joint = report.info["joint"]
    assert (joint["passed"], joint["covered"]) == (True, list(paths))
    assert len(joint["tolerance"]) >= 1 and min(joint["tolerance"]) > 0
    joint = report.leaves[0].directions   # one test of all leaves at once, shared
    assert joint.k == 22 and joint.n_fail == 0 and joint.joint == paths
    assert all(leaf.directions is joint for leaf in report.leaves)
    assert all(leaf.taylor.consistent for leaf in report.leaves)   # each leaf's own
    # f(θ) and k + 1 = 22 directions x 2 points, then f(θ) + 3 Taylor steps per leaf
    assert report.info["evaluations"] == 2 * 22 + 1 + 4 * len(paths)
    text = str(report)
    assert "checked together by 22 random directions" in text and "22/22 pass (joint)" in text


def test_localises_single_entry_off_by_one_percent_among_12k(joint_for_small_params):
    loss, params, args = _mlp_problem()
    grad_fn = _with(loss, lambda g: {**g, "W": g["W"].at[37, 91].multiply(1.01)})
    report = jaxcheck.check(loss, params, *args, grad_fn=grad_fn, mode="fast")
    assert not report.ok
    assert [(f.path, f.index) for f in report.failures] == [("['W']", (37, 91))]
    f = report.failures[0]
    assert f.analytic == pytest.approx(1.01 * f.numerical, rel=1e-6)
    assert [leaf.path for leaf in report.leaves if not leaf.ok] == ["['W']"]
    # the joint screen failed: every leaf probed; W, whose probe showed, was searched at
    # once, and the FAIL of its block decided it (its own test not run); the others and W
    # without the block were cleared by the first joint test with the block's gradient
    # replaced by its measured values: no clearing joint test
    assert (report.info["joint"]["passed"], report.info["joint"]["covered"]) == (False, [])
    others = ["['b']", "['c']", "['v']"]
    flat = 37 * params["W"].shape[1] + 91
    clearing = report.info["clearing"]
    (lo, hi), = clearing.pop("holes").values()
    assert lo <= flat < hi and hi - lo <= 4
    assert clearing == {"passed": True, "directions": 22, "leaves": ["['W']", *others],
                        "covered": ["['W']", *others], "first_test": True}
    w = report.leaf("['W']").directions
    assert w.joint == () and w.n_fail == 0 and w.k == 0 and w.undecided == 21
    assert all(report.leaf(p).directions.joint == ("['W']", *others)
               and report.leaf(p).directions.k == 22 for p in others)
    assert "not run (21 undecided): a component FAILs" in str(report)
    # O(log n) tests, not O(n): far fewer evaluations than full mode's 2 per component
    assert report.info["evaluations"] < 0.25 * 2 * report.n_components
    assert "['W'][37, 91]" in str(report)


def test_failed_clearing_joint_test_resumes_the_search(joint_for_small_params):
    # two wrong entries of W far apart and one of v: W's first path finds one, the clearing
    # joint test (W holed at its block) fails, and the search goes on with W's unverified
    # halves, while v, searched too, is decided by its own block
    loss, params, args = _mlp_problem()
    wrong = [(3, 5), (90, 100)]

    def edit(g):
        W = g["W"]
        for i, j in wrong:
            W = W.at[i, j].multiply(1.05)
        return {**g, "W": W, "v": g["v"].at[7].multiply(1.05)}
    report = jaxcheck.check(loss, params, *args, grad_fn=_with(loss, edit), mode="fast")
    found = sorted((f.path, f.index) for f in report.failures)
    assert found == [("['W']", w) for w in wrong] + [("['v']", (7,))]
    assert report.info["joint"]["passed"] is False
    clearing = report.info["clearing"]
    assert clearing["passed"] is False and sorted(clearing["holes"]) == ["['W']", "['v']"]
    # W's second wrong entry, outside its block, kept the corrected first test from passing
    assert clearing["first_test"] is False
    assert {leaf.path for leaf in report.leaves if not leaf.ok} == {"['W']", "['v']"}


def test_corrected_first_joint_test_takes_out_the_blocks_of_two_searched_leaves(
        joint_for_small_params):
    # one wrong entry in each of two leaves: both are searched, and the first joint test,
    # with both blocks' gradient replaced by the values measured there, clears the rest
    loss, params, args = _mlp_problem()

    def edit(g):
        return {**g, "W": g["W"].at[37, 91].multiply(1.05), "v": g["v"].at[7].multiply(1.05)}
    report = jaxcheck.check(loss, params, *args, grad_fn=_with(loss, edit), mode="fast")
    assert sorted(f.location for f in report.failures) == ["['W'][37, 91]", "['v'][7]"]
    clearing = report.info["clearing"]
    assert (clearing["passed"], clearing["first_test"]) == (True, True)
    assert sorted(clearing["holes"]) == ["['W']", "['v']"]
    assert [leaf.path for leaf in report.leaves if leaf.ok] == ["['b']", "['c']"]


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


def test_catches_whole_wrong_leaf_that_cancels_in_one_direction(own_tests_only):
    loss, params, args = _mlp_problem()
    n = params["W"].size
    with jax.enable_x64(True):   # direction 0 of leaf 0 (['W']), as fast mode draws it
        theta = jnp.asarray(params["W"], jnp.float64).reshape(-1)
        u = np.asarray(direction_vector(jnp.uint32(0), jnp.uint32(0), jnp.int32(0), jnp.int32(0),
                               jnp.int32(n), theta))
    e = np.random.default_rng(1).standard_normal(n)
    e -= (e @ u) / (u @ u) * u            # an error in every entry, invisible along u
    e *= 1e-2 / np.abs(e).max()
    assert abs(e @ u) < 1e-12
    grad_fn = _with(loss, lambda g: {**g, "W": g["W"] + e.reshape(g["W"].shape)})
    report = jaxcheck.check(loss, params, *args, grad_fn=grad_fn, mode="fast", localise=3)
    d = report.leaf("['W']").directions
    assert d.numbers[0] == 0 and d.status[0] == 0      # the cancelling direction passes ...
    # ... the other random ones do not: the test stops at the first confirmed FAIL
    assert d.n_fail == 1 and d.k + d.undecided == 21
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
    assert a.leaf("['W']").directions.k == 5 + 1   # the joint test: k + 1


def test_taylor_order_two_for_correct_gradient_one_for_wrong():
    loss, params, args = _mlp_problem(n_in=10, n_hidden=12)
    good = jaxcheck.check(loss, params, *args, mode="fast", directions=2)
    bad = jaxcheck.check(loss, params, *args, grad_fn=_with(loss, lambda g: {**g, "W": 2 * g["W"]}),
                         mode="fast", directions=2)
    t_good, t_bad = good.leaf("['W']").taylor, bad.leaf("['W']").taylor
    assert t_good.order == pytest.approx(2.0, abs=0.2) and t_good.consistent
    assert t_bad.order == pytest.approx(1.0, abs=0.2) and t_bad.consistent is False


def test_large_params_taylor_program_measures_remainders_from_f_theta(monkeypatch):
    # the programs of params too large for one vector (`joint.one_vector` false): the Taylor
    # tests' program and the joint test's, each evaluating f(θ) once for all leaves and rows
    from jaxcheck.numerics import joint
    monkeypatch.setattr(joint, "CONCATENATED_MAX_ENTRIES", 0)
    monkeypatch.setattr(jaxcheck.numerics.fast, "JOINT_MIN_SIZE", 0)
    loss, params, args = _mlp_problem(n_in=10, n_hidden=12)
    good = jaxcheck.check(loss, params, *args, mode="fast")
    bad = jaxcheck.check(loss, params, *args, grad_fn=_with(loss, lambda g: {**g, "W": 2 * g["W"]}),
                         mode="fast")
    assert good.ok and good.info["joint"]["passed"] and not bad.ok
    # remainders measured from f(θ) as the program computes it: order 2 for every correct
    # leaf (an f(θ) off by a relative 1e-9 already breaks that), 1 for the wrong one
    assert all(leaf.taylor.remainders.shape == (3,) for leaf in good.leaves)
    assert all(leaf.taylor.consistent for leaf in good.leaves)
    assert bad.leaf("['W']").taylor.consistent is False


def _oracle(wrong):
    """Exact group-testing callbacks for the wrong components `wrong`, counting their calls."""
    calls = {"probe": 0, "k-direction tests": 0}

    def hits(r):
        return any(r[0] <= w < r[1] for w in wrong)

    def probe(r):
        calls["probe"] += 1
        return hits(r)

    def dirty(ranges):
        calls["k-direction tests"] += len(ranges)
        return [hits(r) for r in ranges]

    def clear(r, hole):
        calls["k-direction tests"] += 1
        return not (hits((r[0], hole[0])) or hits((hole[1], r[1])))

    return calls, probe, dirty, clear, lambda r: sum(r[0] <= w < r[1] for w in wrong)


def test_group_testing_follows_one_wrong_entry_with_one_clearing_test():
    n = 1 << 20
    calls, *oracle = _oracle({12345})
    loc = localise(n, *oracle, block=4, limit=10)
    assert loc.found == 1 and loc.unexplored == () and loc.spread == ()
    assert len(loc.blocks) == 1 and loc.blocks[0][0] <= 12345 < loc.blocks[0][1]
    # about 1.5 probes per level, and every half left on the way cleared by one test
    assert calls["probe"] <= 2 * np.log2(n / 4)
    assert calls["k-direction tests"] == 1


def test_group_testing_costs_order_b_log_n_tests():
    n, wrong = 1 << 20, {12345, 800000}
    calls, *oracle = _oracle(wrong)
    loc = localise(n, *oracle, block=40, limit=10)
    assert loc.found == 2 and loc.unexplored == ()
    assert all(any(lo <= w < hi for lo, hi in loc.blocks) for w in wrong)
    assert calls["probe"] <= 2 * len(wrong) * np.log2(n)
    # the first path's clearing test fails (the second entry is on it): its halves one by one
    assert calls["k-direction tests"] <= (len(wrong) - 1) * np.log2(n) + len(wrong)


def test_group_testing_defers_the_first_clearing_test_and_resumes_where_it_fails():
    n, wrong = 1 << 20, {12345, 800000}
    calls, *oracle = _oracle(wrong)
    loc = localise(n, *oracle, block=4, limit=10, defer=True)
    # the first path ends in a block with a FAIL: its clearing test is left to the caller
    assert loc.found == 1 and loc.deferred is not None and calls["k-direction tests"] == 0
    (lo, hi), unverified = loc.deferred
    assert lo <= 12345 < hi and loc.blocks == ((lo, hi),)
    assert any(a <= 800000 < b for a, b in unverified)   # the caller's test would fail
    more = localise(n, *oracle, block=4, limit=10, resume=unverified, found=loc.found)
    assert more.found == 2 and more.deferred is None and more.unexplored == ()
    assert any(a <= 800000 < b for a, b in more.blocks)
    # no deferral where the path found nothing to fail the leaf
    calls, *oracle = _oracle(set())
    assert localise(n, *oracle, block=4, limit=10, defer=True).deferred is None


def test_directions_option_is_validated():
    with pytest.raises(ValueError, match="directions: expected a positive int, got 0"):
        jaxcheck.check(lambda w: jnp.sum(w ** 2), jnp.ones(3), mode="fast", directions=0)


def test_rows_grouped_by_direction_match_direction_vector_and_row_order():
    from jaxcheck.evaluation.directions import Directions
    from jaxcheck.inputs.problem import Problem
    from jaxcheck.inputs.pytree import split
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
            assert r.u_sum[i] == pytest.approx(u.sum(), rel=1e-12, abs=1e-15)
            if hi[i] - lo[i] == 1:  # where it is used: the one entry of u
                assert r.u_sum[i] == u[lo[i]]
            if hi[i] - lo[i] == 1:
                assert r.u_sum[i] == u.sum()
            step = np.asarray(theta + t[i] * u) - np.asarray(theta)
            assert r.g_step[i] == pytest.approx(c @ step, rel=1e-9, abs=1e-15)
            assert r.f[i] - f0 == pytest.approx(r.g_step[i], abs=1e-12)
        assert r.u_sum[3] == dirs.vector(2, 5, 6)[5]
        assert dirs.evaluations == 2 * numbers.size


def test_directions_on_a_few_rows_of_a_large_leaf_give_the_values_of_whole_leaf_directions(
        monkeypatch):
    # the search's last levels: ranges within a window of rows, built and followed through
    # the loss on those rows alone (`_evaluate_window`), as the whole-leaf program would
    from jaxcheck.evaluation import directions as d
    from jaxcheck.evaluation import engine
    from jaxcheck.inputs.problem import Problem
    from jaxcheck.inputs.pytree import split
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        w, v = (jnp.asarray(rng.standard_normal(s) / 16) for s in ((300, 256), (256, 3)))
        x = jnp.asarray(rng.standard_normal((8, 300)))
        p, a = split((w, v)), split((x,))
        problem = Problem(lambda q, x: jnp.sum(jnp.tanh(jnp.tanh(x @ q[0]) @ q[1]) ** 2),
                          p.structure, a.structure)
        engine.clear_cache()
        assert engine.traced_loss(problem, 0, tuple(p.dynamic), tuple(a.dynamic)) is not None

        real, g = engine.call_batches, jnp.asarray(rng.standard_normal(w.size))

        def along(window, *rows):
            monkeypatch.setattr(d.Directions, "_window", window)
            dirs = d.Directions(problem, 0, tuple(p.dynamic), tuple(a.dynamic), 0, 3, g,
                                np.array([1e-9, 0.0]))
            programs = []
            monkeypatch.setattr(engine, "call_batches",
                                lambda fn, *args: programs.append(fn) or real(fn, *args))
            return dirs.along(*rows), programs

        n = w.size
        numbers = np.array([4, 4, 9, 2, 2])
        lo = np.array([0, 0, 70_000, 5, 76_700])   # the last in the leaf's last rows
        hi = np.array([1000, 1000, 70_100, 6, n])
        t = np.array([1e-3, -1e-3, 2e-3, 1e-4, -1e-3])
        holes = (np.array([0, 0, 70_010, 0, 0]), np.array([0, 0, 70_020, 0, 0]))
        got, used = along(d.Directions._window, numbers, lo, hi, t, *holes)
        want, dense = along(lambda self, keys: None, numbers, lo, hi, t, *holes)
        assert used == [d._evaluate_window] and dense == [d._evaluate_directions]
        for x, y in zip(got, want):
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-17)
        # a range wider than the window takes the whole leaf's program
        _, used = along(d.Directions._window, np.array([1]), np.array([0]), np.array([n // 2]),
                        np.array([1e-3]))
        assert used == [d._evaluate_directions]
        engine.clear_cache()


def test_signs_at_some_indices_are_those_of_the_whole_vector():
    from jaxcheck.evaluation.directions import signs, signs_at
    seed, leaf, number = jnp.uint32(3), jnp.uint32(2), jnp.int32((1 << 30) + 5)
    n = 100_003
    whole = np.asarray(signs(seed, leaf, number, n, jnp.float32))
    idx = np.array([0, 1, 31, 32, 33, 63, 64, 5000, n - 1])
    np.testing.assert_array_equal(
        np.asarray(signs_at(seed, leaf, number, jnp.asarray(idx, jnp.int32), jnp.float32)),
        whole[idx])


def test_leaf_whose_own_tolerance_is_much_tighter_is_tested_on_its_own(joint_for_small_params):
    # w1's gradient is huge (1e8), so its rounding dominates the joint tolerance; w2's own
    # test is far tighter, and a joint pass must not stand in for it
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(10))
    params = {"w1": jnp.asarray(rng.standard_normal(10)),
              "w2": jnp.asarray(rng.standard_normal(10))}
    offset = float(jnp.sum(params["w1"] * x))

    def loss(p, x):   # ≈ 0 at params: the round-off of the loss itself is tiny
        return 1e8 * (jnp.sum(p["w1"] * x) - offset) + jnp.sum(p["w2"] ** 2)

    report = jaxcheck.check(loss, params, x, mode="fast")
    joint = report.info["joint"]
    assert report.ok and (joint["passed"], joint["covered"]) == (True, ["['w1']"])
    assert report.leaf("['w1']").directions.joint == ("['w1']",)
    assert report.leaf("['w2']").directions.joint == ()
    assert ("checked by random directions (1 together by 22, 1 each on its own by 21)"
            in str(report))
    # and an error in w2 far below the joint tolerance is still caught, by w2's own test
    bad = jaxcheck.check(loss, params, x, mode="fast",
                         grad_fn=_with(lambda p, x: loss(p, x),
                                       lambda g: {**g, "w2": g["w2"].at[3].multiply(1 + 1e-6)}))
    assert [f.location for f in bad.failures] == ["['w2'][3]"]


def test_joint_screen_with_points_that_do_not_round_exactly(joint_for_small_params):
    # entries far below the step do not survive θ + t·u exactly: the joint test then sums
    # g·(P − θ) at every point, and its verdicts stay right
    from jaxcheck.numerics.joint import exact_steps
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        W = rng.standard_normal((30, 20))
        W[0, :5] = 1e-30 * (1 + rng.random(5))
        params = {"W": jnp.asarray(W), "b": jnp.asarray(rng.standard_normal(20))}
        assert not bool(exact_steps([params["W"]], jnp.asarray(2.0 ** -17)))
    x = jnp.asarray(rng.standard_normal((8, 30)))

    def loss(p, x):
        return jnp.mean(jnp.tanh(x @ p["W"] + p["b"]) ** 2)

    good = jaxcheck.check(loss, params, x, mode="fast")
    assert good.ok and good.info["joint"]["passed"]
    bad = jaxcheck.check(loss, params, x, mode="fast",
                         grad_fn=_with(loss, lambda g: {**g, "b": g["b"].at[7].multiply(1.001)}))
    assert [f.location for f in bad.failures] == ["['b'][7]"]


def test_errors_of_two_leaves_that_cancel_in_the_sum_are_still_caught(joint_for_small_params):
    # the same error, with opposite signs, in two leaves that enter the loss identically:
    # along any direction moving both leaves with equal signs, they cancel
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((8, 16)))
    params = {"a": jnp.asarray(rng.standard_normal(16) / 4),
              "b": jnp.asarray(rng.standard_normal(16) / 4)}

    def loss(p, x):
        return jnp.mean(jnp.tanh(x @ (p["a"] + p["b"])) ** 2)

    def edit(g):
        e = 1e-3 * jnp.abs(g["a"]).max()
        return {"a": g["a"].at[2].add(e), "b": g["b"].at[2].add(-e)}
    report = jaxcheck.check(loss, params, x, grad_fn=_with(loss, edit), mode="fast")
    assert sorted(f.location for f in report.failures) == ["['a'][2]", "['b'][2]"]


def test_leaves_of_different_dtypes_are_each_tested_on_their_own(joint_for_small_params):
    # with precision="native" the leaves keep their dtypes: a joint step would promote them
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        params = {"a": jnp.asarray(rng.standard_normal(16), jnp.float32),
                  "b": jnp.asarray(rng.standard_normal(16), jnp.float64)}

        def loss(p):
            return jnp.sum(jnp.tanh(p["a"]).astype(jnp.float64) * p["b"])

        report = jaxcheck.check(loss, params, mode="fast", precision="native")
        assert report.ok and "joint" not in report.info
        bad = jaxcheck.check(loss, params, mode="fast", precision="native",
                             grad_fn=_with(loss, lambda g: {**g, "a": g["a"].at[5].multiply(1.2)}))
        assert [f.location for f in bad.failures] == ["['a'][5]"]



@pytest.mark.parametrize("with_grad_fn", [False, True])
def test_params_too_large_to_test_together_hold_one_leafs_gradient_at_a_time(monkeypatch,
                                                                            with_grad_fn):
    # as at 1e8 parameters, where the joint test's copies of the params do not fit: each
    # leaf's gradient is computed where its test starts, on its own, and let go with its
    # report (only the leaf's: it equals that leaf's entry of the whole gradient, flat)
    import weakref

    from jaxcheck.plan import gradients
    monkeypatch.setattr(jaxcheck.numerics.fast, "_fits_together", lambda tasks: False)
    loss, params, args = _mlp_problem()
    asked, alive_before, held, comparing = [], [], [], []
    one, whole = gradients.AnalyticGradient.device_leaf, gradients.AnalyticGradient.device_leaves

    def recording(self, leaf):
        alive_before.append(sum(ref() is not None for ref in held))
        asked.append(leaf)
        out = one(self, leaf)
        comparing.append(True)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(whole(self)[leaf]).reshape(-1))
        comparing.pop()
        held.append(weakref.ref(out))
        return out

    def all_at_once(self, *args):
        assert comparing, "every leaf's gradient asked for at once"
        return whole(self, *args)

    monkeypatch.setattr(gradients.AnalyticGradient, "device_leaf", recording)
    monkeypatch.setattr(gradients.AnalyticGradient, "device_leaves", all_at_once)
    right = jax.grad(loss) if with_grad_fn else None
    assert jaxcheck.check(loss, params, *args, grad_fn=right, mode="fast").ok
    assert asked == [0, 1, 2, 3] and alive_before == [0, 0, 0, 0]
    asked.clear()
    wrong = _with(loss, lambda g: {**g, "W": g["W"].at[37, 5].multiply(1.01)})
    bad = jaxcheck.check(loss, params, *args, grad_fn=wrong, mode="fast")
    assert [f.location for f in bad.failures] == ["['W'][37, 5]"]
    assert asked == [0, 1, 2, 3]
