"""The examples in jaxcheck's docstrings run, on the jaxcheck that is imported.

pytest's `--doctest-modules` would collect them from the source tree; CI runs the tests against
the installed wheel instead (`.ci/run`), so the modules are found through the imported package
(`jaxcheck.__path__`), with the flags of `doctest_optionflags` in `pyproject.toml`.
"""
import doctest
import importlib
import pkgutil

import pytest

import jaxcheck

MODULES = sorted(m.name for m in pkgutil.walk_packages(jaxcheck.__path__, "jaxcheck.")
                 if not m.name.endswith("__main__"))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _examples(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    return [t for t in doctest.DocTestFinder().find(module, name) if t.examples]


def test_the_docstrings_have_examples_to_run():
    assert sum(len(_examples(name)) for name in MODULES) >= 10


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in _examples(name):
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
