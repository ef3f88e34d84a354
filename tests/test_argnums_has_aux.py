"""jax.grad conventions: `argnums` indexes `(params, *args)`, `has_aux` drops aux."""
import jax
import jax.numpy as jnp
import pytest

import jaxcheck

W = jnp.array([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2]])
B = jnp.array([0.1, -0.1])
X = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)


def loss(p, b, x):
    return jnp.mean(jnp.tanh(x @ p["W"] + b) ** 2)


def loss_with_aux(p, b, x):
    return loss(p, b, x), {"mean_input": jnp.mean(x)}


def test_int_argnums_checks_that_argument_with_unprefixed_paths():
    def wrong(p, b, x):  # gradient in b, entry 1 off by 1%
        return jax.grad(loss, argnums=1)(p, b, x).at[1].multiply(1.01)

    report = jaxcheck.check(loss, {"W": W}, B, X, argnums=1, grad_fn=wrong)
    assert not report.ok
    assert [leaf.path for leaf in report.leaves] == [""]
    assert [(f.path, f.index) for f in report.failures] == [("", (1,))]
    assert jaxcheck.check(loss, {"W": W}, B, X, argnums=-2).ok   # -2 is also b


def test_tuple_argnums_names_the_argument_position_in_paths():
    def wrong(p, b, x):  # a tuple of gradients, as jax.grad(argnums=(0, 1)) returns
        gp, gb = jax.grad(loss, argnums=(0, 1))(p, b, x)
        return {"W": gp["W"].at[2, 0].add(1e-3)}, gb

    report = jaxcheck.check(loss, {"W": W}, B, X, argnums=(0, 1), grad_fn=wrong)
    assert [leaf.path for leaf in report.leaves] == ["[0]['W']", "[1]"]
    assert [f.location for f in report.failures] == ["[0]['W'][2, 0]"]
    assert jaxcheck.check(loss, {"W": W}, B, X, argnums=[0, 1]).ok  # a list, as jax.grad


def test_has_aux_drops_aux_of_fn_and_grad_fn():
    def wrong(p, b, x):
        g, aux = jax.grad(loss_with_aux, has_aux=True)(p, b, x)
        return {"W": g["W"].at[0, 1].multiply(-1.0)}, aux

    report = jaxcheck.check(loss_with_aux, {"W": W}, B, X, has_aux=True, grad_fn=wrong)
    assert [f.location for f in report.failures] == ["['W'][0, 1]"]
    assert jaxcheck.check(loss_with_aux, {"W": W}, B, X, has_aux=True).ok


@pytest.mark.parametrize("argnums, error, words", [
    (3, ValueError, ["argnums", "3 entries", "got 3"]),
    (-4, ValueError, ["argnums", "-3 to -1", "got -4"]),
    ((0, 0), ValueError, ["argnums", "distinct", "(0, 0)"]),
    ((0, -3), ValueError, ["argnums", "distinct"]),
    (1.0, TypeError, ["argnums", "int or a non-empty tuple of ints", "1.0"]),
    (True, TypeError, ["argnums", "True"]),
    ((), TypeError, ["argnums", "()"]),
])
def test_bad_argnums_is_named_with_what_was_expected(argnums, error, words):
    with pytest.raises(error) as e:
        jaxcheck.check(loss, {"W": W}, B, X, argnums=argnums)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_tuple_returned_without_has_aux_asks_for_has_aux():
    with pytest.raises(ValueError, match=r"fn: expected a scalar loss, got a tuple of 2 "
                                         r"elements; .*pass has_aux=True"):
        jaxcheck.check(loss_with_aux, {"W": W}, B, X)


def test_has_aux_with_scalar_loss_says_a_pair_was_expected():
    with pytest.raises(ValueError, match=r"fn: has_aux=True expects fn to return a pair "
                                         r"\(loss, aux\); got an array of shape \(\)"):
        jaxcheck.check(loss, {"W": W}, B, X, has_aux=True)


def test_has_aux_grad_fn_without_aux_says_a_pair_was_expected():
    grad_only = jax.grad(loss)
    with pytest.raises(ValueError, match=r"grad_fn: has_aux=True expects grad_fn to return "
                                         r"a pair \(grad, aux\)"):
        jaxcheck.check(loss_with_aux, {"W": W}, B, X, has_aux=True, grad_fn=grad_only)


def test_tuple_argnums_grad_fn_must_return_one_gradient_per_argument():
    with pytest.raises(ValueError, match=r"grad_fn: with argnums=\(0, 1\) expected a tuple "
                                         r"of 2 gradients.*got dict"):
        jaxcheck.check(loss, {"W": W}, B, X, argnums=(0, 1), grad_fn=jax.grad(loss))


def test_has_aux_must_be_a_bool():
    with pytest.raises(TypeError, match=r"has_aux: expected True or False, got 'yes'"):
        jaxcheck.check(loss, {"W": W}, B, X, has_aux="yes")
