"""jaxcheck.sweep: finite-difference error over ε, per dtype."""
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import jaxcheck


def test_reproduces_the_cubic_at_one_with_a_step_of_one_hundredth():
    s = jaxcheck.sweep(lambda t: t ** 3, 1.0, eps=[1e-2], dtypes=["float64"])
    assert s.analytic == 3.0
    assert s.two_sided[0, 0] == pytest.approx(3.0001, abs=1e-12)
    assert s.one_sided[0, 0] == pytest.approx(3.0301, abs=1e-12)
    assert s.two_sided_error[0, 0] == pytest.approx(1e-4, rel=1e-6)
    assert s.one_sided_error[0, 0] == pytest.approx(0.0301, rel=1e-9)


def test_best_step_follows_the_error_balance_per_dtype():
    loss = lambda p, x: jnp.sum(jnp.tanh(x @ p["w"]) ** 2)
    s = jaxcheck.sweep(loss, {"w": jnp.array([0.3, -0.4])}, jnp.ones((3, 2)))
    assert s.dtypes == ("float32", "float64") and s.eps[0] == 1e-1 and s.eps[-1] == 1e-12
    # two-sided best ~ε^(1/3): 5e-3 (float32), 6e-6 (float64); one-sided ~ε^(1/2).
    assert 1e-4 <= s.best_eps("float32") <= 1e-1
    assert 1e-7 <= s.best_eps("float64") <= 1e-4
    assert s.best_eps("float64", "one_sided") < s.best_eps("float32", "one_sided")
    f32 = s.dtypes.index("float32")
    assert s.two_sided_error[f32].min() < 1e-3 < s.two_sided_error[f32, -1]   # the V


def test_plot_draws_one_curve_per_dtype_and_method():
    import matplotlib
    matplotlib.use("Agg")
    s = jaxcheck.sweep(lambda t: jnp.sum(jnp.sin(t)), jnp.array([0.5, 1.0]))
    ax = s.plot()
    assert len(ax.get_lines()) == 4
    assert ax.get_xscale() == "log"


def test_plot_without_matplotlib_says_what_to_install(monkeypatch):
    s = jaxcheck.sweep(lambda t: t ** 2, 1.0, eps=[1e-3], dtypes=["float64"])
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install jaxcheck\[plot\]"):
        s.plot()


def test_rejects_non_positive_steps():
    with pytest.raises(ValueError, match="eps: expected a non-empty sequence of positive"):
        jaxcheck.sweep(lambda t: t ** 2, 1.0, eps=[0.0])
    assert np.all(jaxcheck.sweep(lambda t: t ** 2, 2.0, eps=[0.5],
                                 dtypes=["float64"]).two_sided == 4.0)
