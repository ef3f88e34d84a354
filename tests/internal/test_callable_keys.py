"""An unhashable callable keys compiled programs by its identity (`inputs.callables`): the
same object compiles nothing on a second check, any other object compiles its own."""
import dataclasses

import jax
import jax.numpy as jnp

import jaxcheck
from jaxcheck.evaluation import engine

P = {"w": jnp.array([0.3, -1.2, 0.7]), "b": jnp.array(0.2)}
X = jnp.linspace(-1.0, 1.0, 3)


@dataclasses.dataclass
class Scaled:
    """A loss with an array field: unhashable, as every eq=True dataclass."""

    scale: jax.Array

    def __call__(self, p, x):
        return self.scale * jnp.sum(jnp.tanh(p["w"] * x + p["b"]) ** 2)


def test_the_same_object_reuses_its_programs_and_another_compiles_its_own():
    # an equal object (the same scale) is another key: identity, as jax.jit keys a function
    first = Scaled(jnp.array(3.0))
    assert jaxcheck.check(first, P, X).ok
    before = engine.compilations()
    assert jaxcheck.check(first, P, X).ok
    assert engine.compilations() == before
    assert jaxcheck.check(Scaled(jnp.array(3.0)), P, X).ok
    assert engine.compilations() > before
