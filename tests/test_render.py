import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcheck
from jaxcheck import LeafReport, Report


def loss(p, x):
    return jnp.sum(jnp.tanh(x @ p["W"]) ** 2) + jnp.sum(jnp.sin(p["b"]))


PARAMS = {"W": jnp.full((3, 2), 0.3), "b": jnp.linspace(-1.0, 1.0, 4)}
X = jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)


def wrong(p, x):
    g = jax.grad(loss)(p, x)
    return {"W": g["W"].at[1, 0].add(0.05), "b": g["b"]}


@pytest.fixture(scope="module")
def failing():
    return jaxcheck.check(loss, PARAMS, X, grad_fn=wrong)


@pytest.fixture(scope="module")
def passing():
    return jaxcheck.check(loss, PARAMS, X)


def test_to_dict_follows_the_documented_schema(failing):
    d = failing.to_dict()
    assert d["schema"] == "jaxcheck.report/1"
    assert set(d) == {"schema", "ok", "relative_difference", "band", "n_components", "n_fail",
                      "n_inconclusive", "info", "leaves", "failures"}
    assert d["ok"] is False and d["band"] == failing.band and d["n_fail"] == 1
    assert d["relative_difference"] == pytest.approx(failing.relative_difference)
    assert d["info"]["mode"] == "full" and d["info"]["precision"] == "float64"
    assert [leaf["path"] for leaf in d["leaves"]] == ["['W']", "['b']"]
    assert d["leaves"][0] == {"path": "['W']", "shape": [3, 2], "dtype": "float32", "size": 6,
                              "relative_difference": d["leaves"][0]["relative_difference"],
                              "n_fail": 1, "n_inconclusive": 0}
    (f,) = d["failures"]
    assert set(f) == {"path", "index", "analytic", "numerical", "tolerance", "excess"}
    assert f["path"] == "['W']" and f["index"] == [1, 0]
    assert f["analytic"] - f["numerical"] == pytest.approx(0.05, rel=1e-6)
    assert f["excess"] > 1 and f["tolerance"] > 0


def test_to_json_round_trips_and_is_strict_json(failing, passing):
    for report in (failing, passing):
        text = report.to_json()
        assert json.loads(text) == report.to_dict()
        assert "NaN" not in text and "Infinity" not in text
    assert json.loads(passing.to_json(indent=None))["failures"] == []


def test_to_dict_max_failures_truncates_but_keeps_the_count(passing):
    many = jaxcheck.check(lambda w: jnp.sum(w**2), jnp.ones(5), grad_fn=lambda w: 3 * w)
    d = many.to_dict(max_failures=2)
    assert len(d["failures"]) == 2 and d["n_fail"] == 5
    with pytest.raises(ValueError, match="max_failures: expected a non-negative int"):
        many.to_dict(max_failures=-1)


def synthetic(path: str, analytic, numerical, tolerance, status) -> Report:
    arr = lambda v: np.asarray(v, np.float64)
    leaf = LeafReport(path, (len(analytic),), "float64", arr(analytic), arr(numerical),
                      arr(tolerance), np.asarray(status))
    return Report((leaf,), info={"rel_step": np.float64(1e-5), "shape": (2, 3),
                                 "counts": np.arange(2), "obj": object,
                                 "jax": jnp.ones(2)})


def test_non_finite_numbers_and_numpy_info_become_json_values():
    report = synthetic("['x']", [1.0, np.nan], [1.0, 2.0], [0.0, 1.0], [0, 2])
    d = json.loads(report.to_json())
    assert d["failures"][0]["analytic"] is None and d["failures"][0]["excess"] is None
    assert d["info"]["rel_step"] == 1e-5 and d["info"]["shape"] == [2, 3]
    assert d["info"]["counts"] == [0, 1] and isinstance(d["info"]["obj"], str)
    assert d["info"]["jax"] == [1.0, 1.0]


def test_html_shows_verdict_leaf_table_and_worst_components(failing):
    page = failing._repr_html_()
    assert page.startswith('<div class="jaxcheck-report">') and page.endswith("</div>")
    assert ">FAIL</span>" in page and "1 of 10 components outside tolerance" in page
    for header in ("leaf", "shape", "dtype", "size", "rel. diff", "FAIL", "INCONCLUSIVE",
                   "component", "analytic", "numerical", "tolerance"):
        assert f">{header}</th>" in page
    assert "worst components (1 of 1)" in page
    assert "[&#x27;W&#x27;][1, 0]" in page          # the path, HTML-escaped
    f = failing.failures[0]
    assert f"{f.analytic:+.6e}" in page and f"{f.numerical:+.6e}" in page
    assert "background:#ffebe9" in page              # the failing leaf's row is highlighted


def test_html_of_passing_report_has_ok_badge_and_no_failure_table(passing):
    page = passing._repr_html_()
    assert ">OK</span>" in page and "all 10 components within tolerance" in page
    assert "worst components" not in page and "background:#ffebe9" not in page


def test_html_escapes_leaf_paths():
    report = synthetic("['<b>&x']", [1.0, 3.0], [1.0, 2.0], [0.1, 0.1], [0, 2])
    page = report._repr_html_()
    assert "<b>&x" not in page and "&lt;b&gt;&amp;x" in page


def test_plot_draws_bands_and_a_scatter_per_leaf(failing):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    fig = failing.plot()
    bands, *scatters = fig.axes
    assert bands.get_yscale() == "log" and bands.get_ylabel() == "relative difference"
    assert [t.get_text() for t in bands.get_xticklabels()] == ["['W']", "['b']"]
    assert {t.get_text().strip() for t in bands.texts} == {"excellent", "ok", "suspicious",
                                                          "wrong"}
    assert "FAIL" in bands.get_title()
    assert [ax.get_title() for ax in scatters] == ["['W']: 1 FAIL", "['b']: 0 FAIL"]
    assert all(ax.get_xlabel() == "numerical" and ax.get_ylabel() == "analytic"
               for ax in scatters)
    offsets = scatters[0].collections[0].get_offsets()
    assert len(offsets) == 6                         # every component of W drawn
    fig.savefig(__import__("io").BytesIO(), format="png")   # renders without error


def test_plot_selects_leaves_by_path(failing):
    pytest.importorskip("matplotlib")
    fig = failing.plot(leaves=["['b']"])
    assert [ax.get_title() for ax in fig.axes[1:]] == ["['b']: 0 FAIL"]
    with pytest.raises(KeyError, match="no checked leaf with path"):
        failing.plot(leaves=["['c']"])
    with pytest.raises(TypeError, match="leaves: expected a sequence of leaf paths"):
        failing.plot(leaves="['b']")


def test_plot_without_matplotlib_says_how_to_install(failing, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)   # import fails as if absent
    with pytest.raises(ImportError, match=r"pip install 'jaxcheck\[plot\]'"):
        failing.plot()


def test_notebook_display_uses_the_html(failing):
    formatters = pytest.importorskip("IPython.core.formatters")
    data, _ = formatters.DisplayFormatter().format(failing)
    assert data["text/html"] == failing._repr_html_()
    assert data["text/plain"] == repr(failing)
