"""The pytest plugin's public module: entry point `pytest11: jaxcheck`, or
`-p jaxcheck.pytest_plugin`.

The plugin lives in `jaxcheck/tools/pytest_plugin.py`; this module is its stable import path.
"""
from .tools.pytest_plugin import GradCheck as GradCheck
from .tools.pytest_plugin import GradientCheckError as GradientCheckError
from .tools.pytest_plugin import gradcheck as gradcheck
from .tools.pytest_plugin import pytest_addoption as pytest_addoption
from .tools.pytest_plugin import pytest_report_header as pytest_report_header
from .tools.pytest_plugin import session_options as session_options

__all__ = ["GradCheck", "GradientCheckError", "gradcheck", "pytest_addoption",
           "pytest_report_header", "session_options"]
