"""`precision`: "auto" (default), "float64" or "native", and what the report says was used."""
import jax
import jax.numpy as jnp
import pytest

import jaxcheck

on_cpu = pytest.mark.skipif(jax.default_backend() != "cpu", reason="auto resolves per device")


def loss(w):
    return jnp.sum(jnp.sin(w) * w)


@on_cpu
def test_default_is_auto_and_checks_in_float64_on_a_cpu():
    report = jaxcheck.check(loss, jnp.linspace(-1.0, 1.0, 4))
    assert report.ok
    assert report.info["precision"] == "float64"
    assert report.info["precision_requested"] == "auto"
    assert report.info["eps_f"] < 1e-15               # float64 arithmetic


def test_options_default_is_auto():
    assert jaxcheck.Options().precision == "auto"


def test_native_reports_native_and_checks_in_float32():
    report = jaxcheck.check(loss, jnp.linspace(-1.0, 1.0, 4), precision="native")
    assert report.ok
    assert report.info["precision"] == "native"
    assert report.info["precision_requested"] == "native"
    assert report.info["eps_f"] > 1e-8


def test_float64_reports_float64():
    report = jaxcheck.check(loss, jnp.linspace(-1.0, 1.0, 4), precision="float64")
    assert report.info["precision"] == report.info["precision_requested"] == "float64"
    assert report.info["eps_f"] < 1e-15


@on_cpu
def test_jacobian_and_hessian_report_the_precision_used():
    jac = jaxcheck.check_jacobian(jnp.sin, jnp.ones(3))
    hess = jaxcheck.check_hessian(loss, jnp.ones(3))
    for report in (jac, hess):
        assert report.info["precision"] == "float64"
        assert report.info["precision_requested"] == "auto"
    native = jaxcheck.check_jacobian(jnp.sin, jnp.ones(3), precision="native")
    assert native.info["precision"] == native.info["precision_requested"] == "native"


def test_json_carries_both():
    info = jaxcheck.check(loss, jnp.ones(3), precision="native").to_dict()["info"]
    assert info["precision"] == "native" and info["precision_requested"] == "native"


@pytest.mark.parametrize("bad", ["float32", "x64", None, 64])
def test_a_bad_precision_is_a_value_error_naming_precision(bad):
    with pytest.raises(ValueError, match=r"precision: expected one of \('auto', 'float64', "
                                         r"'native'\)"):
        jaxcheck.check(loss, jnp.ones(3), precision=bad)
    with pytest.raises(ValueError, match="precision"):
        jaxcheck.Options(precision=bad)
