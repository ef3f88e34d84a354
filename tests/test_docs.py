"""The documentation site's sources hold what the site promises: the API reference lists exactly
the public API, every notebook and guide page is in the navigation, and the README keeps the
test command CI runs. (`mkdocs build --strict` in `.ci/run` builds the site itself; the guide
pages' examples are doctested through `--doctest-glob` in `pyproject.toml`.)"""
import importlib.metadata
import os
import pathlib
import re

import pytest

import jaxcheck

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _nav() -> str:
    config = (ROOT / "mkdocs.yml").read_text()
    return config[config.index("\nnav:"):config.index("\n", config.index("Changelog:"))]


def test_api_reference_lists_exactly_the_public_api():
    entries = re.findall(r"^::: jaxcheck\.(\w+)$", (DOCS / "api.md").read_text(), re.M)
    assert len(entries) == len(set(entries)), "a name is documented twice"
    assert sorted(entries) == sorted(jaxcheck.__all__)


def test_every_notebook_is_a_page_of_the_site():
    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    assert sorted(re.findall(r"notebooks/(\S+\.ipynb)", _nav())) == notebooks


def test_every_docs_page_is_in_the_navigation():
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(re.findall(r"(\S+\.md)$", _nav(), re.M)) == pages


def test_guide_pages_have_examples_that_run():
    doctested = [p.name for p in (DOCS / "guide").glob("*.md") if ">>> " in p.read_text()]
    assert len(doctested) >= 7       # each runs as one doctest: --doctest-glob=*.md


def test_readme_keeps_the_test_command_ci_runs():
    command = 'pip install ".[test]" && python -m pytest'
    assert command in (ROOT / "README.md").read_text()
    assert "python -m pytest" in (ROOT / ".ci" / "run").read_text()


def test_the_version_has_one_source():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = { attr = "jaxcheck.__version__" }' in pyproject
    try:
        installed = importlib.metadata.version("jaxcheck")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("jaxcheck is imported from the source tree, not installed")
    assert installed == jaxcheck.__version__


def test_ci_tests_the_installed_wheel_not_the_source_tree():
    if not os.environ.get("JAXCHECK_TEST_INSTALLED"):
        pytest.skip("set by .ci/run, which runs the tests against the installed wheel")
    package = pathlib.Path(jaxcheck.__file__).resolve().parent
    assert "site-packages" in package.parts, package
    assert not (ROOT / "jaxcheck").exists()      # the tests run from a copy without the source
    assert importlib.metadata.version("jaxcheck") == jaxcheck.__version__
