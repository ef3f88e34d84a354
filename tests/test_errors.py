"""Every bad input ends in a short error that names the argument, what was given and what was
expected; never a deep JAX traceback and never a silent verdict."""
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcheck
from jaxcheck import NonFiniteGradientError, NonFiniteLossError

PACKAGE = os.path.dirname(jaxcheck.__file__)


def loss(p):
    return jnp.sum(jnp.sin(p["w"])) + jnp.sum(p["b"] ** 2)


def grad(p):
    return {"w": jnp.cos(p["w"]), "b": 2 * p["b"]}


PARAMS = {"w": jnp.linspace(-1.0, 1.0, 3), "b": jnp.array([0.5, -0.25])}


def raises_clearly(exc, call, *words):
    """`call()` raises `exc` from jaxcheck's own code, with a short message holding `words`."""
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert len(message) < 800, message
    assert "jax/_src" not in message
    assert str(info.traceback[-1].path).startswith(PACKAGE), info.traceback[-1]
    return info.value


# fn and grad_fn themselves -------------------------------------------------------------------

def test_rejects_fn_that_is_not_callable():
    raises_clearly(TypeError, lambda: jaxcheck.check(3.0, PARAMS), "fn", "callable", "float")


def test_rejects_grad_fn_that_is_not_callable():
    raises_clearly(TypeError, lambda: jaxcheck.check(loss, PARAMS, grad_fn={"w": 1.0}),
                   "grad_fn", "callable", "dict")


def test_rejects_non_scalar_loss():
    raises_clearly(ValueError, lambda: jaxcheck.check(lambda p: jnp.sin(p["w"]), PARAMS),
                   "fn", "scalar", "shape (3,)")


def test_rejects_integer_loss():
    raises_clearly(ValueError, lambda: jaxcheck.check(lambda p: jnp.sum(p["w"] > 0), PARAMS),
                   "fn", "real scalar", "int")


@pytest.mark.parametrize("bad", [-1.0, 0.0])
def test_rejects_loss_that_is_not_finite_at_params(bad):
    params = {"w": jnp.array([1.0, bad, 2.0])}
    error = raises_clearly(NonFiniteLossError,
                           lambda: jaxcheck.check(lambda p: jnp.sum(jnp.log(p["w"])), params),
                           "fn", "at params", "before any perturbation")
    assert ("nan" if bad < 0 else "inf") in str(error)
    assert isinstance(error, ValueError)


@pytest.mark.parametrize("grad_fn", [None, lambda w, c: jnp.ones(2)])
def test_rejects_loss_that_is_not_finite_at_params_with_a_finite_gradient(grad_fn):
    fn = lambda w, c: jnp.sum(w) + jnp.log(c)
    raises_clearly(NonFiniteLossError, lambda: jaxcheck.check(fn, jnp.ones(2), -1.0,
                                                              grad_fn=grad_fn),
                   "fn", "nan", "before any perturbation")


def test_names_the_component_whose_perturbation_makes_the_loss_nan():
    # Finite at params with a finite gradient, but θ - h < 0 for the entry at 1e-7.
    params = {"w": jnp.array([1.0, 2.0]), "v": jnp.array([3.0, 1e-7, 4.0])}
    fn = lambda p: jnp.sum(jnp.sqrt(p["v"])) + jnp.sum(p["w"] ** 2)
    raises_clearly(NonFiniteLossError, lambda: jaxcheck.check(fn, params),
                   "nan", "params['v'][1]", "perturbed")


def test_rejects_params_that_are_not_finite():
    params = {"w": jnp.array([[1.0, 2.0], [jnp.inf, 0.0]]), "b": jnp.zeros(2)}
    raises_clearly(ValueError, lambda: jaxcheck.check(loss, params),
                   "params", "inf", "params['w'][1, 0]", "finite")


def test_user_exception_in_fn_keeps_its_type_and_says_which_call_raised_it():
    def fn(p):
        raise RuntimeError("my loss is broken")

    with pytest.raises(RuntimeError, match="my loss is broken") as info:
        jaxcheck.check(fn, PARAMS)
    assert "(raised while jaxcheck evaluated fn at params)" in info.value.__notes__


def test_user_exception_in_grad_fn_keeps_its_type_and_says_which_call_raised_it():
    def grad_fn(p):
        raise KeyError("no such layer")

    with pytest.raises(KeyError, match="no such layer") as info:
        jaxcheck.check(loss, PARAMS, grad_fn=grad_fn)
    assert "(raised while jaxcheck evaluated grad_fn at params)" in info.value.__notes__


def test_python_branch_on_a_value_asks_for_a_traceable_fn():
    def fn(p):  # the output would change with the perturbed value: not traceable
        if p["w"][0] > 0:
            return jnp.sum(p["w"])
        return jnp.sum(jnp.sin(p["w"]))

    error = raises_clearly(TypeError, lambda: jaxcheck.check(fn, PARAMS),
                           "fn", "trace", "jnp.where", "TracerBoolConversionError")
    assert isinstance(error.__cause__, jax.errors.ConcretizationTypeError)


def test_value_dependent_output_shape_asks_for_a_traceable_fn():
    fn = lambda p: jnp.sum(p["w"][p["w"] > 0])
    raises_clearly(TypeError, lambda: jaxcheck.check(fn, PARAMS), "fn", "shape that depends")


def test_numpy_conversion_inside_fn_asks_for_a_traceable_fn():
    fn = lambda p: jnp.asarray(np.sum(np.asarray(p["w"]) ** 2))
    raises_clearly(TypeError, lambda: jaxcheck.check(fn, PARAMS),
                   "fn", "TracerArrayConversionError", "np.asarray")


# what grad_fn returns ------------------------------------------------------------------------

def test_rejects_grad_fn_with_another_tree_structure():
    raises_clearly(ValueError,
                   lambda: jaxcheck.check(loss, PARAMS, grad_fn=lambda p: [p["w"], p["b"]]),
                   "grad_fn", "structure", "PyTreeDef")


def test_rejects_grad_fn_with_a_missing_leaf():
    raises_clearly(ValueError,
                   lambda: jaxcheck.check(loss, PARAMS, grad_fn=lambda p: {"w": p["w"]}),
                   "grad_fn", "structure")


def test_rejects_grad_fn_returning_none_for_a_floating_leaf():
    raises_clearly(ValueError,
                   lambda: jaxcheck.check(loss, PARAMS, grad_fn=lambda p: {**grad(p), "b": None}),
                   "grad_fn", "None", "['b']", "shape (2,)")


def test_rejects_grad_fn_with_a_wrong_shape():
    bad = lambda p: {**grad(p), "w": jnp.cos(p["w"])[None]}
    raises_clearly(ValueError, lambda: jaxcheck.check(loss, PARAMS, grad_fn=bad),
                   "grad_fn", "shape (1, 3)", "['w']", "expected (3,)")


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.complex64, jnp.bool_])
def test_rejects_grad_fn_with_a_non_real_floating_dtype(dtype):
    bad = lambda p: {**grad(p), "b": (2 * p["b"]).astype(dtype)}
    raises_clearly(ValueError, lambda: jaxcheck.check(loss, PARAMS, grad_fn=bad),
                   "grad_fn", str(jnp.dtype(dtype)), "['b']", "real floating")


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_rejects_non_finite_grad_fn_entry_naming_leaf_and_index(bad):
    wrong = lambda p: {**grad(p), "b": (2 * p["b"]).at[1].set(bad)}
    error = raises_clearly(NonFiniteGradientError,
                           lambda: jaxcheck.check(loss, PARAMS, grad_fn=wrong),
                           "grad_fn", "['b'][1]", str(bad))
    assert isinstance(error, ValueError)


def test_rejects_non_finite_autodiff_gradient_naming_leaf_and_index():
    # sqrt(0) is finite, its derivative is not: jax.grad(fn) itself is the culprit.
    fn = lambda w: jnp.sum(jnp.sqrt(w))
    raises_clearly(NonFiniteGradientError, lambda: jaxcheck.check(fn, jnp.array([[1.0, 0.0]])),
                   "jax.grad(fn)", "inf", "[0, 1]")


# params -------------------------------------------------------------------------------------

@pytest.mark.parametrize("params", [{}, [], (), None, {"a": [], "b": {}}])
def test_rejects_an_empty_pytree(params):
    raises_clearly(ValueError, lambda: jaxcheck.check(lambda p: 1.0, params),
                   "params", "floating", "PyTreeDef")


def test_rejects_params_without_floating_leaves():
    params = {"n": jnp.arange(3), "mask": jnp.ones(3, bool), "key": jax.random.key(0), "k": 2}
    raises_clearly(ValueError, lambda: jaxcheck.check(lambda p: jnp.sum(p["n"]) * 1.0, params),
                   "params", "at least one floating-point")


def test_rejects_params_whose_floating_leaves_all_have_size_zero():
    params = {"w": jnp.zeros((0, 3)), "b": jnp.zeros(0)}
    raises_clearly(ValueError, lambda: jaxcheck.check(lambda p: jnp.sum(p["w"]) + 1.0, params),
                   "params", "size 0", "['w']: (0, 3)")


def _with_empty_leaf(p):
    return jnp.sum(jnp.tanh(jnp.array([0.5, -1.0]) @ p["w"]) ** 2) + jnp.sum(p["e"] ** 2)


def _outputs_with_empty_leaf(p):
    return jnp.concatenate([jnp.tanh(jnp.array([0.5, -1.0]) @ p["w"]),
                            jnp.sum(p["e"], axis=0)])


EMPTY_BESIDE = {"w": jnp.array([[0.3, -0.2], [0.1, 0.4]]), "e": jnp.zeros((0, 3))}


@pytest.mark.parametrize("call", [
    lambda: jaxcheck.check(_with_empty_leaf, EMPTY_BESIDE),
    lambda: jaxcheck.check(_with_empty_leaf, EMPTY_BESIDE, mode="fast"),
    lambda: jaxcheck.check(_with_empty_leaf, EMPTY_BESIDE, mode="sample", samples=2),
    lambda: jaxcheck.check_hessian(_with_empty_leaf, EMPTY_BESIDE),
    lambda: jaxcheck.check_third_order(_with_empty_leaf, EMPTY_BESIDE),
    lambda: jaxcheck.check_jacobian(_outputs_with_empty_leaf, EMPTY_BESIDE),
    lambda: jaxcheck.check_jacobian(_outputs_with_empty_leaf, EMPTY_BESIDE,
                                    jac_fn=jax.jacobian(_outputs_with_empty_leaf)),
], ids=["full", "fast", "sample", "hessian", "third_order", "jacobian", "jac_fn"])
def test_a_leaf_of_size_zero_beside_others_does_not_stop_the_check(call):
    report = call()
    assert report.ok


def test_a_wrong_jvp_is_found_beside_a_leaf_of_size_zero():
    def jvp_fn(p, t):   # 1% off in the columns of p["w"]
        return 1.01 * jax.jvp(_outputs_with_empty_leaf, (p,), (t,))[1]

    report = jaxcheck.check_jacobian(_outputs_with_empty_leaf, EMPTY_BESIDE, jvp_fn=jvp_fn)
    assert not report.ok
    assert {f.location.split(" wrt ")[1] for f in report.failures} == {
        "['w'][0, 0]", "['w'][0, 1]", "['w'][1, 0]", "['w'][1, 1]"}


@pytest.mark.parametrize("call", [
    lambda: jaxcheck.check_jacobian(lambda p: jnp.zeros((0, 2)) * jnp.sum(p), jnp.ones(3)),
    lambda: jaxcheck.check_rules(lambda p: jnp.zeros((0, 2)) * jnp.sum(p), jnp.ones(3)),
], ids=["jacobian", "rules"])
def test_rejects_outputs_whose_floating_leaves_all_have_size_zero(call):
    raises_clearly(ValueError, call, "fn", "size 0", "(0, 2)")


def test_rules_reject_a_complex_output_by_name():
    raises_clearly(ValueError, lambda: jaxcheck.check_rules(lambda p: jnp.exp(1j * p),
                                                            jnp.ones(3)),
                   "fn", "complex output", "real and imaginary parts")


class Unhashable:
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, scale):
        self.scale = scale


def test_strings_and_objects_in_params_are_passed_through_unchecked():
    params = {"w": jnp.linspace(-1.0, 1.0, 3), "act": "tanh", "cfg": Unhashable(2.0),
              "n": 3, "key": jax.random.key(1)}

    def fn(p):
        act = getattr(jnp, p["act"])
        return p["cfg"].scale * jnp.sum(act(p["w"])) * p["n"]

    report = jaxcheck.check(fn, params)
    assert report.ok and [leaf.path for leaf in report.leaves] == ["['w']"]

    def wrong(p):
        g = 6.0 * (1 - jnp.tanh(p["w"]) ** 2)
        return {**p, "w": g.at[2].multiply(1.001)}

    report = jaxcheck.check(fn, params, grad_fn=wrong)
    assert [f.location for f in report.failures] == ["['w'][2]"]


def test_complex_leaves_are_checked_by_real_and_imaginary_part():
    params = {"w": jnp.array([0.5, 1.5]), "z": jnp.array([1 + 2j])}
    report = jaxcheck.check(lambda p: jnp.sum(p["w"] ** 2) * jnp.abs(p["z"][0]), params)
    assert report.ok and [leaf.path for leaf in report.leaves] == ["['w']", "['z']"]
    assert report.leaf("['z']").shape == (1, 2)  # [..., 0] real part, [..., 1] imaginary


def test_zero_size_floating_leaf_is_reported_with_zero_components():
    params = {"w": jnp.array([0.3, -0.7]), "empty": jnp.zeros((2, 0))}
    report = jaxcheck.check(lambda p: jnp.sum(jnp.tanh(p["w"])) + jnp.sum(p["empty"]), params)
    assert report.ok and report.n_components == 2
    assert report.leaf("['empty']").size == 0
    assert "['empty']  (2, 0)" in str(report)


# options ------------------------------------------------------------------------------------

@pytest.mark.parametrize("eps", [-1e-6, 0.0, math.nan, math.inf, 1.0, "small"])
def test_rejects_eps_outside_zero_one(eps):
    raises_clearly(ValueError, lambda: jaxcheck.check(loss, PARAMS, eps=eps),
                   "eps", "expected a float in (0, 1)", repr(eps))


@pytest.mark.parametrize("batch_size", [0, -4, 2.5, True])
def test_rejects_batch_size_that_is_not_a_positive_int(batch_size):
    raises_clearly(ValueError, lambda: jaxcheck.check(loss, PARAMS, batch_size=batch_size),
                   "batch_size", "positive int", repr(batch_size))


@pytest.mark.parametrize("options, words", [
    ({"safety": math.nan}, ["safety", ">= 1", "nan"]),
    ({"safety": 0.5}, ["safety", ">= 1", "0.5"]),
    ({"precision": "float32"}, ["precision", "'native'", "'float32'"]),
    ({"max_failures": -1}, ["max_failures", "non-negative", "-1"]),
])
def test_rejects_other_invalid_options(options, words):
    raises_clearly(ValueError, lambda: jaxcheck.check(loss, PARAMS, **options), *words)


@pytest.mark.parametrize("name, suggestion", [("batchsize", "batch_size"),
                                              ("safty", "safety"), ("precison", "precision")])
def test_unknown_option_suggests_the_closest_name(name, suggestion):
    raises_clearly(TypeError, lambda: jaxcheck.check(loss, PARAMS, **{name: 1}),
                   repr(name), f"Did you mean {suggestion!r}?", "Known options")


# JAX transformations ------------------------------------------------------------------------

def test_check_inside_jit_raises_a_clear_error():
    raises_clearly(TypeError, lambda: jax.jit(lambda p: jaxcheck.check(loss, p).ok)(PARAMS),
                   "params", "tracer", "params['b']", "outside")


def test_check_with_traced_args_raises_a_clear_error():
    fn = lambda p, x: jnp.sum(jnp.sin(p * x))
    call = lambda: jax.vmap(lambda x: jaxcheck.check(fn, jnp.ones(2), x).ok)(jnp.ones((3, 2)))
    raises_clearly(TypeError, call, "args", "tracer", "args[0]")
