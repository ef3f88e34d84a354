import os

import jaxcheck

pytest_plugins = ["pytester"]


def pytest_report_header(config):
    """Which jaxcheck the tests run against: in CI (`.ci/run`), the installed wheel's."""
    return f"jaxcheck {jaxcheck.__version__}: {os.path.dirname(jaxcheck.__file__)}"
