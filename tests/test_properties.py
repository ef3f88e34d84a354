"""Property-based tests: on random pytrees of random smooth functions, a correct gradient never
FAILs, and one wrong entry in it is always caught and localised to its leaf and index."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import jaxcheck

# Bounded and derandomized: the same examples in every run. No shrinking (each example
# compiles a few programs; the failing example is printed as drawn).
PROPERTY = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SHAPES = [(), (0,), (1,), (3,), (2, 3), (2, 0), (5,), (3, 1, 2)]
DTYPES = ["float32", "float64", "float32", "float64", "int32"]   # floats twice as likely


@st.composite
def leaves(draw):
    if draw(st.integers(0, 7)) == 0:
        return draw(st.floats(-2.0, 2.0, width=32))   # Python floats are checked leaves too
    dtype, shape = draw(st.sampled_from(DTYPES)), draw(st.sampled_from(SHAPES))
    size = math.prod(shape)
    if dtype == "int32":
        values = draw(st.lists(st.integers(-3, 3), min_size=size, max_size=size))
        return np.array(values, np.int32).reshape(shape)
    values = draw(st.lists(st.floats(-2.0, 2.0, width=32), min_size=size, max_size=size))
    # NumPy arrays keep float64 without x64; jaxcheck casts both to its working precision.
    return np.array(values, dtype).reshape(shape)


@st.composite
def nest(draw, items, depth=0):
    """A random pytree (dicts, lists, tuples; at most 3 deep) over `items`, in order."""
    if len(items) == 1 and (depth >= 2 or draw(st.booleans())):
        return items[0]
    kind = draw(st.sampled_from(["dict", "list", "tuple"]))
    cuts = sorted(draw(st.sets(st.integers(1, len(items) - 1), max_size=2))
                  if len(items) > 1 and depth < 2 else [])
    groups = [items[a:b] for a, b in zip([0] + cuts, cuts + [len(items)])]
    children = [draw(nest(group, depth + 1)) for group in groups]
    if kind == "dict":
        return dict(zip("abc", children))   # keys keep leaf order
    return children if kind == "list" else tuple(children)


@st.composite
def pytrees(draw):
    return draw(nest(draw(st.lists(leaves(), min_size=1, max_size=4))))


# A small grammar of smooth elementwise terms: c · φ(a·x + b), summed over a leaf.
TERMS = {
    "sin": jnp.sin,
    "tanh": jnp.tanh,
    "gauss": lambda z: jnp.exp(-z ** 2),
    "cubic": lambda z: z + 0.5 * z ** 2 - 0.25 * z ** 3,
}
coefficient = st.floats(-2.0, 2.0).filter(lambda c: abs(c) > 0.1)
term = st.tuples(st.sampled_from(sorted(TERMS)), coefficient, coefficient, st.floats(-1.0, 1.0))
specs = st.tuples(st.lists(term, min_size=4, max_size=4), st.integers(0, 3), st.integers(0, 3),
                  coefficient)


def smooth_function(spec):
    """The loss Σ_leaves c·Σ φ(a·x + b) + c'·sin(Σ x_i)·tanh(Σ x_j) described by `spec`."""
    terms, i, j, cross = spec

    def fn(params):
        xs = [x * 1.0 for x in jax.tree_util.tree_leaves(params)]  # ints become floats
        total = sum(c * jnp.sum(TERMS[name](a * x + b)) for (name, c, a, b), x in zip(terms, xs))
        # One term that couples two leaves, so the loss is not a sum over leaves.
        xi, xj = xs[i % len(xs)], xs[j % len(xs)]
        return total + cross * jnp.sin(jnp.sum(xi)) * jnp.tanh(jnp.sum(xj))

    return fn


def checked_leaves(tree):
    """(path, leaf) of the floating leaves with at least one component."""
    return [(jax.tree_util.keystr(path), np.asarray(leaf))
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
            if (isinstance(leaf, float) or np.issubdtype(np.asarray(leaf).dtype, np.floating))
            and np.size(leaf) > 0]


def with_one_wrong_entry(grad_fn, path, index, size_of_error):
    def wrong(params):
        grads = grad_fn(params)
        return jax.tree_util.tree_map_with_path(
            lambda p, g: g.at[index].add(size_of_error(g[index]))
            if jax.tree_util.keystr(p) == path else g, grads)

    return wrong


MIXED = {"w": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
         "rest": [np.zeros((2, 0)), (np.arange(3, dtype=np.int32), 0.75)]}
DEEP = [np.float64(0.5), (np.linspace(-2, 2, 6).reshape(3, 1, 2).astype(np.float32),)]
SPEC = ([("cubic", 1.5, -0.5, 0.2), ("sin", 1.0, 2.0, 0.0), ("gauss", -1.0, 1.0, 0.5),
         ("tanh", 0.5, 1.0, -0.5)], 0, 3, 1.0)


@PROPERTY
@example(params=MIXED, spec=SPEC, pick=7, sign=1.0)
@example(params=DEEP, spec=SPEC, pick=4, sign=-1.0)
@given(params=pytrees(), spec=specs, pick=st.integers(0, 2**16), sign=st.sampled_from([-1.0, 1.0]))
def test_correct_gradient_passes_and_one_wrong_entry_is_caught(params, spec, pick, sign):
    fn = smooth_function(spec)
    checked = checked_leaves(params)
    if not checked:  # nothing to check: a clear ValueError, never a verdict
        with pytest.raises(ValueError, match="params: expected"):
            jaxcheck.check(fn, params)
        return

    report = jaxcheck.check(fn, params)
    assert report.ok, str(report)
    assert report.n_components == sum(leaf.size for _, leaf in checked)

    # One entry wrong by 1e-3 of its magnitude, plus an absolute floor far above the
    # float64 tolerance (~1e-9 here), must FAIL, and be the only failure.
    path, leaf = checked[pick % len(checked)]
    flat = (pick // len(checked)) % leaf.size
    index = tuple(int(i) for i in np.unravel_index(flat, leaf.shape))
    wrong = with_one_wrong_entry(jax.grad(fn, allow_int=True), path, index,
                                 lambda g: sign * (1e-3 * jnp.abs(g) + 1e-6))
    report = jaxcheck.check(fn, params, grad_fn=wrong)
    assert [(f.path, f.index) for f in report.failures] == [(path, index)], str(report)
