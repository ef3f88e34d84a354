"""Complex params, inputs and outputs, with JAX's convention for their gradients."""
import jax
import jax.numpy as jnp
import pytest

import jaxcheck


def test_jax_convention_for_real_losses_of_complex_params():
    # f(x + iy) = x² + y²: ∂f/∂x = 6, ∂f/∂y = 8 at 3 + 4i; jax.grad gives ∂f/∂x − i·∂f/∂y.
    with jax.enable_x64(True):
        g = jax.grad(lambda z: jnp.abs(z) ** 2)(jnp.complex128(3 + 4j))
    assert complex(g) == 6 - 8j


def loss(p, x):
    return jnp.sum(jnp.abs(p["z"] * x - 1.0) ** 2) + jnp.real(jnp.sum(p["z"] ** 3)) + jnp.sum(
        p["w"] ** 2)


PARAMS = {"z": jnp.array([1 + 2j, -0.5 + 0.3j, 0.2 - 1j], dtype=jnp.complex64),
          "w": jnp.array([0.4, -0.1])}
X = jnp.array([0.3, 0.7, 1.1])


def test_complex_params_are_checked_by_real_and_imaginary_parts():
    report = jaxcheck.check(loss, PARAMS, X, grad_fn=jax.grad(loss))
    assert report.ok, str(report)
    assert report.leaf("['z']").shape == (3, 2)        # [..., 0] real, [..., 1] imaginary
    assert report.n_components == 3 * 2 + 2


def test_conjugated_gradient_is_caught_in_the_imaginary_parts():
    conj = lambda p, x: jax.tree_util.tree_map(jnp.conj, jax.grad(loss)(p, x))
    report = jaxcheck.check(loss, PARAMS, X, grad_fn=conj)
    assert not report.ok
    assert sorted(f.index for f in report.failures) == [(0, 1), (1, 1), (2, 1)]


def test_hand_written_complex_gradient_with_one_wrong_entry_localised():
    def grad_fn(p, x):
        z = p["z"]
        r = z * x - 1.0
        # ∂/∂x − i∂/∂y of |r|² is 2·conj(r)·x; of Re(z³) it is 3z²
        gz = 2 * jnp.conj(r) * x + 3 * z ** 2
        return {"z": gz.at[1].multiply(1.001), "w": 2 * p["w"]}

    report = jaxcheck.check(loss, PARAMS, X, grad_fn=grad_fn)
    assert {f.path for f in report.failures} == {"['z']"}
    assert {f.index[0] for f in report.failures} == {1}


def jac_f(p, c):
    return {"hol": p["z"] ** 2 * c, "non": jnp.conj(p["z"]) * p["z"] + p["x"],
            "r": jnp.abs(p["z"]) * p["x"][0]}


JP = {"z": jnp.array([1 + 2j, -0.5 + 0.3j]), "x": jnp.array([0.3, 0.8])}
C = jnp.array(0.7 - 0.2j)


def test_complex_jacobian_passes_for_jax_rev_and_fwd_and_user_rules():
    report = jaxcheck.check_jacobian(jac_f, JP, C)
    assert report.ok, str(report)
    block = report.block("['hol']", "['z']", ad="rev")
    assert (block.output_complex, block.input_complex) == (True, True)
    assert block.analytic.shape == (4, 4)
    vjp = lambda p, ct, c: jax.vjp(lambda q: jac_f(q, c), p)[1](ct)[0]
    jvp = lambda p, t, c: jax.jvp(lambda q: jac_f(q, c), (p,), (t,))[1]
    assert jaxcheck.check_jacobian(jac_f, JP, C, vjp_fn=vjp).ok
    assert jaxcheck.check_jacobian(jac_f, JP, C, jvp_fn=jvp).ok


def test_conjugated_vjp_is_localised_to_imaginary_input_parts():
    vjp = lambda p, ct, c: jax.tree_util.tree_map(
        jnp.conj, jax.vjp(lambda q: jac_f(q, c), p)[1](ct)[0])
    report = jaxcheck.check_jacobian(jac_f, JP, C, vjp_fn=vjp)
    assert not report.ok
    assert {(f.input_path, f.input_part) for f in report.failures} == {("['z']", "imag")}
    assert ".imag" in report.failures[0].location


def test_jac_fn_with_complex_primals_is_refused():
    with pytest.raises(ValueError, match="jac_fn: complex primals are not supported"):
        jaxcheck.check_jacobian(jnp.abs, jnp.array([1 + 1j]), jac_fn=lambda z: z)
