"""What a check keeps from tracing `fn` (`inputs.traces`): keyed by the problem, the x64
setting and the inputs' types, whatever containers hold them."""
import jax
import jax.numpy as jnp

from jaxcheck.inputs import pytree, traces
from jaxcheck.inputs.problem import Problem


def _loss(p, x):
    return jnp.sum(jnp.tanh(x @ p["w"]))


def _problem(params, x):
    p, a = pytree.split(params), pytree.split((x,), check_floats=False)
    return Problem(_loss, p.structure, a.structure), tuple(p.dynamic), tuple(a.dynamic)


def test_the_key_is_the_inputs_types_whatever_holds_them():
    problem, pd, ad = _problem({"w": jnp.ones((3, 2))}, jnp.ones((4, 3)))
    key = traces.shapes_key(problem, pd, ad)
    assert traces.shapes_key(problem, pd, ad) == key               # the same tuples again
    assert traces.shapes_key(problem, tuple(pd), tuple(ad)) == key  # equal tuples
    assert traces.shapes_key(problem, list(pd), list(ad)) == key    # lists of the same arrays
    assert traces.shapes_key(problem, pd, ad, "fn") != key
    other, pd2, ad2 = _problem({"w": jnp.ones((3, 5))}, jnp.ones((4, 3)))
    assert other == problem   # the same fn and structure: only the types tell them apart
    assert traces.shapes_key(problem, pd2, ad2) != key
    # a list can change in place: its types are read again
    listed = list(pd)
    assert traces.shapes_key(problem, listed, ad) == key
    listed[0] = jnp.ones((3, 1))
    assert traces.shapes_key(problem, listed, ad)[-1][0] == jax.typeof(listed[0])
    with jax.enable_x64(True):
        assert traces.shapes_key(problem, pd, ad) != key
