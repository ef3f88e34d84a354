"""The pytest plugin (entry point `pytest11: jaxcheck`): the `gradcheck` fixture and its options.

```python
def test_backprop(gradcheck):
    gradcheck(loss, params, x, y, grad_fn=my_backprop)
```

`gradcheck(fn, params, *args, grad_fn=None, **options)` checks like `jaxcheck.assert_gradients`
with the session's options (explicit `**options` win) and returns the `Report`; when a component
FAILs the test fails with `GradientCheckError` whose message is the report's table (leaf, index,
analytic, numerical, tolerance), with no jaxcheck or JAX frames in front of it.

Command-line options:

- `--jaxcheck-mode=full|fast|sample`: `mode` of every check in the session;
- `--jaxcheck-x64` / `--no-jaxcheck-x64`: `precision="float64"` or `"native"`; with neither,
  `precision="auto"` (the default: float64 where the device runs it fast, see
  `jaxcheck.Options`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from .._errors import GradientCheckError as GradientCheckError
from ..inputs.options import MODES


@dataclasses.dataclass(frozen=True)
class GradCheck:
    """The `gradcheck` fixture: `gradcheck(fn, params, *args, grad_fn=None, **options)`.

    - `options`: the session's options from the command line (e.g. `{"mode": "fast"}`); keyword
      options given to a call override them.
    """

    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def check(self, fn: Callable[..., Any], params: Any, *args: Any,
              grad_fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """`jaxcheck.check` with the session's options: the `Report`, without asserting."""
        from ..api.check import check

        return check(fn, params, *args, grad_fn=grad_fn, **{**self.options, **options})

    def __call__(self, fn: Callable[..., Any], params: Any, *args: Any,
                 grad_fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        __tracebackhide__ = True  # the test's own line is where the failure is reported
        report = self.check(fn, params, *args, grad_fn=grad_fn, **options)
        if not report.ok:
            raise GradientCheckError(report)
        return report


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("jaxcheck", "jaxcheck gradient checks (the gradcheck fixture)")
    group.addoption("--jaxcheck-mode", choices=MODES, default=None, dest="jaxcheck_mode",
                    help="mode of every gradcheck: full (default), fast or sample")
    group.addoption("--jaxcheck-x64", action="store_const", const="float64", default=None,
                    dest="jaxcheck_precision",
                    help="gradcheck in float64 working precision (precision='float64'); "
                    "default: precision='auto', float64 where the device runs it fast")
    group.addoption("--no-jaxcheck-x64", action="store_const", const="native",
                    dest="jaxcheck_precision",
                    help="gradcheck in the inputs' own dtypes (precision='native')")


def session_options(config: pytest.Config) -> dict[str, Any]:
    """The check options set on the command line (only those given)."""
    options = {"mode": config.getoption("jaxcheck_mode"),
               "precision": config.getoption("jaxcheck_precision")}
    return {k: v for k, v in options.items() if v is not None}


def pytest_report_header(config: pytest.Config) -> str | None:
    options = session_options(config)
    if not options:
        return None
    return "jaxcheck: " + ", ".join(f"{k}={v}" for k, v in options.items())


@pytest.fixture
def gradcheck(request: pytest.FixtureRequest) -> GradCheck:
    """Check a gradient with the session's jaxcheck options; fail the test with the report's
    table when a component FAILs. See `jaxcheck.pytest_plugin`."""
    return GradCheck(session_options(request.config))
