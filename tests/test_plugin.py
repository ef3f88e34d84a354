import os
import pathlib
import re
from importlib.metadata import entry_points

import pytest

import jaxcheck.pytest_plugin

ROOT = pathlib.Path(__file__).resolve().parent.parent

TESTS = '''
import jax.numpy as jnp

def loss(w, x):
    return jnp.sum(jnp.sin(w * x))

def right(w, x):
    return x * jnp.cos(w * x)

def wrong(w, x):
    return (x * jnp.cos(w * x)).at[2].multiply(1.01)

W, X = jnp.linspace(-1.0, 1.0, 5), jnp.linspace(0.5, 1.5, 5)

def test_right_gradient(gradcheck):
    report = gradcheck(loss, W, X, grad_fn=right)
    assert report.ok

def test_wrong_gradient(gradcheck):
    gradcheck(loss, W, X, grad_fn=wrong)

def test_no_session_options(gradcheck):
    assert gradcheck.options == {}
'''


def plugin_args() -> list[str]:
    """Arguments of the inner pytest runs: `-p jaxcheck.pytest_plugin` unless the installed
    entry point already loads it (passing both would register the module twice)."""
    autoload = not os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    installed = any(ep.value == "jaxcheck.pytest_plugin"
                    for ep in entry_points(group="pytest11"))
    # Hypothesis's plugin imports hypothesis in its terminal summary, and pytester's in-process
    # runs unload what they imported: ~10 s per run. jaxcheck's modules are imported by this
    # file already, so pytest cannot rewrite their asserts (they have none to rewrite).
    quiet = ["-p", "no:hypothesispytest", "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    return quiet + ([] if autoload and installed else ["-p", "jaxcheck.pytest_plugin"])


def test_fixture_passes_right_and_fails_wrong_gradient_with_table(pytester):
    pytester.makepyfile(test_grads=TESTS)
    result = pytester.runpytest(*plugin_args())
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*GradientCheckError: jaxcheck: FAIL - 1 of 5 components outside tolerance, worst [[]2[]]*",
        "*leaf*shape*size*rel. diff*FAIL*INCONCLUSIVE*",
        "*component*analytic*numerical*tolerance*|a-n|/tol*",
    ])
    assert re.search(r"E\s+\[2\]\s+[+-]\d\.\d{6}e[+-]\d\d\s+[+-]\d\.\d{6}e[+-]\d\d", out), out
    # No jaxcheck or JAX frames in front of the table: the failing line is the test's own call.
    assert "jax/_src" not in out and "_check.py" not in out and "pytest_plugin.py" not in out
    assert ">       gradcheck(loss, W, X, grad_fn=wrong)" in out


def test_command_line_options_reach_every_check(pytester):
    pytester.makepyfile(test_options='''
import jax.numpy as jnp

def test_options(gradcheck):
    assert gradcheck.options == {"mode": "fast", "precision": "native"}

def test_native_precision(gradcheck):
    report = gradcheck(lambda w: jnp.sum(jnp.tanh(w)), jnp.linspace(-1.0, 1.0, 4), mode="full")
    assert report.info["precision"] == "native"
    assert report.info["eps_f"] > 1e-8          # float32 arithmetic, not float64

def test_explicit_option_wins(gradcheck):
    report = gradcheck(lambda w: jnp.sum(w ** 3), jnp.ones(3), mode="full", precision="float64")
    assert report.info["precision"] == "float64"

def test_check_returns_failing_report_without_raising(gradcheck):
    report = gradcheck.check(lambda w: jnp.sum(w ** 2), jnp.ones(3), grad_fn=lambda w: 3 * w,
                             mode="full")
    assert not report.ok and report.n_fail == 3
''')
    result = pytester.runpytest(*plugin_args(), "--jaxcheck-mode=fast", "--no-jaxcheck-x64")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["jaxcheck: mode=fast, precision=native"])


def test_x64_option_sets_float64_and_no_option_sets_nothing(pytester):
    pytester.makepyfile(test_x64='''
def test_session(gradcheck):
    assert gradcheck.options == {"precision": "float64"}
''')
    pytester.runpytest(*plugin_args(), "--jaxcheck-x64").assert_outcomes(passed=1)


def test_without_x64_flags_every_check_is_auto(pytester):
    pytester.makepyfile(test_auto='''
import jax.numpy as jnp

def test_session(gradcheck):
    assert gradcheck.options == {}
    report = gradcheck(lambda w: jnp.sum(jnp.sin(w)), jnp.ones(3))
    assert report.info["precision_requested"] == "auto"
    assert report.info["precision"] in ("float64", "native")
''')
    result = pytester.runpytest(*plugin_args())
    result.assert_outcomes(passed=1)
    assert "jaxcheck:" not in result.stdout.str()     # no header: nothing set


def test_rejects_unknown_mode(pytester):
    pytester.makepyfile(test_x="def test_x(): pass\n")
    result = pytester.runpytest(*plugin_args(), "--jaxcheck-mode=quick")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--jaxcheck-mode*invalid choice*'quick'*"])


def test_gradient_check_error_is_an_assertion_error_carrying_the_report():
    import jax.numpy as jnp

    gradcheck = jaxcheck.pytest_plugin.GradCheck()
    with pytest.raises(AssertionError) as info:
        gradcheck(lambda w: jnp.sum(w**2), jnp.ones(2), grad_fn=lambda w: w)
    assert isinstance(info.value, jaxcheck.pytest_plugin.GradientCheckError)
    assert info.value.report.n_fail == 2
    assert str(info.value) == str(info.value.report)


def test_entry_point_is_declared_in_pyproject():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {"jaxcheck": "jaxcheck.pytest_plugin"}


def guide_page() -> str:
    """The guide's page on pytest and the command line (it was a README section)."""
    return (ROOT / "docs" / "guide" / "ci-pytest-cli.md").read_text()


def test_the_guides_pytest_example_runs(pytester):
    blocks = re.findall(r"```python\n(.*?)```", guide_page(), re.S)
    example = next(b for b in blocks if "def test_" in b)
    pytester.makepyfile(test_readme=example)
    result = pytester.runpytest(*plugin_args())
    result.assert_outcomes(passed=1)
