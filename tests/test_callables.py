"""Callables that do not hash (a dataclass with eq=True, an object holding arrays) are checked
like functions: keyed by their identity, as `jax.jit` keys its cache by the function."""
import dataclasses
import warnings

import jax
import jax.numpy as jnp
import pytest

import jaxcheck

P = {"w": jnp.array([0.3, -1.2, 0.7]), "b": jnp.array(0.2)}
X = jnp.linspace(-1.0, 1.0, 3)


@dataclasses.dataclass
class Scaled:
    """A loss (or gradient) object with a field: unhashable, as every eq=True dataclass."""

    fn: object
    scale: jax.Array = dataclasses.field(default_factory=lambda: jnp.array(1.0))

    def __call__(self, *args):
        return jax.tree.map(lambda y: self.scale * y, self.fn(*args))


def loss(p, x):
    return jnp.sum(jnp.tanh(p["w"] * x + p["b"]) ** 2)


def outputs(p, x):
    return jnp.tanh(p["w"] * x + p["b"])


def vjp_rule(p, ct, x):
    return jax.vjp(lambda q: outputs(q, x), p)[1](ct)[0]


def wrong_gradient(p, x):
    g = jax.grad(loss)(p, x)
    return {"w": g["w"].at[2].multiply(1.01), "b": g["b"]}


def test_scaled_does_not_hash():
    with pytest.raises(TypeError):
        hash(Scaled(loss))


@pytest.mark.parametrize("call", [
    lambda: jaxcheck.check(Scaled(loss), P, X),
    lambda: jaxcheck.check(Scaled(loss), P, X, mode="fast"),
    lambda: jaxcheck.check(Scaled(loss), P, X, mode="sample", samples=2),
    lambda: jaxcheck.check(loss, P, X, grad_fn=Scaled(jax.grad(loss))),
    lambda: jaxcheck.check(loss, P, X, reference=Scaled(loss)),
    lambda: jaxcheck.check_hessian(Scaled(loss), P, X),
    lambda: jaxcheck.check_third_order(Scaled(loss), P, X),
    lambda: jaxcheck.check_jacobian(Scaled(outputs), P, X),
    lambda: jaxcheck.check_jacobian(outputs, P, X, vjp_fn=Scaled(vjp_rule)),
    lambda: jaxcheck.check_rules(Scaled(outputs), P, X),
], ids=["full", "fast", "sample", "grad_fn", "reference", "hessian", "third_order",
        "jacobian", "vjp_fn", "rules"])
def test_every_check_passes_a_correct_unhashable_callable(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = call()
    assert report.ok, report


def test_a_wrong_unhashable_gradient_is_found_at_its_entry():
    report = jaxcheck.check(loss, P, X, grad_fn=Scaled(wrong_gradient))
    assert [f.location for f in report.failures] == ["['w'][2]"]


def test_sweep_takes_an_unhashable_loss():
    s = jaxcheck.sweep(Scaled(loss), P, X)
    assert s.best_eps("float64") > 0
