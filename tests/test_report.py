"""The `Report` a user reads: fields, ranking, text, and `assert_gradients`."""
import jax
import jax.numpy as jnp
import pytest
from handwritten_models import mlp_problem, with_hook

import jaxcheck
from jaxcheck import band_of


@pytest.mark.parametrize("value, band", [(1e-9, "excellent"), (1e-6, "ok"), (1e-4, "suspicious"),
                                         (1e-2, "wrong"), (1e-7, "ok"), (1e-3, "wrong")])
def test_band_follows_the_classic_table(value, band):
    assert band_of(value) == band


def _buggy_report():
    loss, backprop, params, args = mlp_problem()
    bad = with_hook(backprop, lambda g: {**g,
                                         "W0": g["W0"].at[1, 2].multiply(1.5),
                                         "b1": g["b1"].at[0].multiply(1.01)})
    return jaxcheck.check(loss, params, *args, grad_fn=bad)


def test_failures_are_ranked_by_excess_and_carry_both_values():
    report = _buggy_report()
    assert [(f.path, f.index) for f in report.failures] == [("['W0']", (1, 2)), ("['b1']", (0,))]
    excess = [f.excess for f in report.failures]
    assert excess == sorted(excess, reverse=True) and excess[-1] > 1
    assert report.failures[0].location == "['W0'][1, 2]"


def test_leaves_report_path_size_and_counts():
    report = _buggy_report()
    by_path = {leaf.path: leaf for leaf in report.leaves}
    assert set(by_path) == {"['W0']", "['b0']", "['W1']", "['b1']"}
    assert by_path["['W0']"].size == 5 * 8 and by_path["['W0']"].n_fail == 1
    assert by_path["['b0']"].n_fail == 0 and by_path["['b0']"].relative_difference < 1e-7
    assert report.leaf("['b1']").n_fail == 1
    with pytest.raises(KeyError, match="paths"):
        report.leaf("['nope']")


def test_text_has_verdict_leaf_table_and_worst_components():
    text = str(_buggy_report())
    first, rest = text.split("\n", 1)
    assert first.startswith("jaxcheck: FAIL - 2 of 75 components outside tolerance")
    assert "worst ['W0'][1, 2]" in first
    assert "['b0']" in rest and "INCONCLUSIVE" in rest
    assert "['W0'][1, 2]" in rest.split("worst components")[1]


def test_assert_gradients_raises_with_the_table_and_returns_report_when_ok():
    loss, backprop, params, args = mlp_problem()
    assert jaxcheck.assert_gradients(loss, params, *args, grad_fn=backprop).ok
    bad = with_hook(backprop, lambda g: {**g, "b0": 2 * g["b0"]})
    with pytest.raises(AssertionError, match=r"jaxcheck: FAIL .*\['b0'\]"):
        jaxcheck.assert_gradients(loss, params, *args, grad_fn=bad)


def test_unknown_option_suggests_the_closest_name():
    with pytest.raises(TypeError, match="Did you mean 'batch_size'"):
        jaxcheck.check(lambda w: jnp.sum(w**2), jnp.ones(2), batchsize=4)


def test_report_relative_difference_leaves_out_kinks():
    report = jaxcheck.check(lambda w: jnp.sum(jnp.abs(w)) + jnp.sum(jnp.sin(w)),
                            jnp.array([0.0, 0.5]))
    assert report.ok and report.n_inconclusive == 1
    assert report.relative_difference < 1e-7
    assert jax.config.jax_enable_x64 is False
