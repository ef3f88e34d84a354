import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcheck


def _problem():
    rng = np.random.default_rng(3)
    params = {"W": jnp.asarray(rng.standard_normal((12, 10)) / 4, jnp.float32),
              "b": jnp.asarray(0.1 * rng.standard_normal(10), jnp.float32)}
    x = jnp.asarray(rng.standard_normal((6, 12)), jnp.float32)

    def loss(p, x):
        return jnp.mean(jnp.tanh(x @ p["W"] + p["b"]) ** 2)

    return loss, params, x


def test_correct_gradient_passes_on_sampled_components():
    loss, params, x = _problem()
    report = jaxcheck.check(loss, params, x, mode="sample", samples=7)
    assert report.ok
    assert [leaf.analytic.size for leaf in report.leaves] == [7, 7]
    assert report.info["evaluations"] <= 2 * 7 * 2 + 1 + 6 * 14
    assert "14 sampled of 130 components" in str(report)


def test_samples_are_reproducible_by_seed_and_differ_between_seeds():
    loss, params, x = _problem()
    a, b, c = (jaxcheck.check(loss, params, x, mode="sample", samples=5, seed=s)
               for s in (1, 1, 2))
    ia, ib, ic = (r.leaf("['W']").indices for r in (a, b, c))
    np.testing.assert_array_equal(ia, ib)
    assert not np.array_equal(ia, ic)
    assert a.leaves[0].path == "['W']"     # leaf number 0 in tree order


def test_wrong_leaf_is_flagged_with_path_and_index():
    loss, params, x = _problem()

    def grad_fn(p, x):
        g = jax.grad(loss)(p, x)
        return {**g, "b": -g["b"]}
    report = jaxcheck.check(loss, params, x, grad_fn=grad_fn, mode="sample", samples=4)
    assert not report.ok
    sampled = {(int(i),) for i in report.leaf("['b']").indices}
    assert {f.path for f in report.failures} == {"['b']"}
    assert {f.index for f in report.failures} <= sampled


def test_samples_covering_the_leaf_check_every_component():
    loss, params, x = _problem()

    def grad_fn(p, x):
        g = jax.grad(loss)(p, x)
        return {**g, "W": g["W"].at[5, 2].multiply(1.01)}
    report = jaxcheck.check(loss, params, x, grad_fn=grad_fn, mode="sample", samples=1000)
    assert [(f.path, f.index) for f in report.failures] == [("['W']", (5, 2))]


def test_samples_option_is_validated():
    with pytest.raises(ValueError, match="samples: expected a positive int"):
        jaxcheck.check(lambda w: jnp.sum(w ** 2), jnp.ones(3), mode="sample", samples=-1)
