"""`check_rules`: one planted rule bug per check, caught by that check; correct `jax.nn` and
`jnp.linalg` functions pass every check."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcheck

FIRST_ORDER = ("transpose", "batching", "compilation", "contracts", "linearize")


def _sin_with_bwd(bwd):
    @jax.custom_vjp
    def f(x):
        return jnp.sin(x)

    f.defvjp(lambda x: (f(x), x), bwd)
    return f


def test_bwd_returning_float32_for_a_float64_primal_breaks_the_dtype_contract():
    f = _sin_with_bwd(lambda x, g: ((g * jnp.cos(x)).astype(jnp.float32),))
    with jax.enable_x64(True):
        report = jaxcheck.check_rules(f, jnp.linspace(0.1, 1.0, 4), checks=FIRST_ORDER)
    assert report.failed == ("contracts",)
    finding = report.check("contracts").findings[0]
    assert finding.what == "jax.vjp cotangent dtype"
    assert finding.location == "vjp"
    assert (finding.expected, finding.actual) == ("float64", "float32")


def test_bwd_affine_in_the_cotangent_gives_nonzero_for_a_zero_cotangent():
    f = _sin_with_bwd(lambda x, g: (g * jnp.cos(x) + 1e-3,))
    report = jaxcheck.check_rules(f, jnp.linspace(0.1, 1.0, 4), checks=FIRST_ORDER)
    assert report.failed == ("contracts",)
    zero = [f for f in report.check("contracts").findings
            if f.what == "jax.vjp of a zero cotangent"]
    assert zero[0].location == "vjp[0]"
    assert (zero[0].expected, zero[0].tolerance) == (0.0, 0.0)
    assert zero[0].actual == pytest.approx(1e-3)


def test_custom_vmap_rule_that_disagrees_with_the_loop_fails_batching():
    @jax.custom_batching.custom_vmap
    def scale(x):
        return 2.0 * x

    @scale.def_vmap
    def _rule(axis_size, in_batched, x):
        return 3.0 * x, in_batched[0]             # BUG: the batched rule scales by 3

    @jax.custom_jvp
    def f(x):
        return scale(x)

    f.defjvp(lambda p, t: (f(p[0]), 2.0 * t[0]))
    report = jaxcheck.check_rules(f, jnp.array([0.5, -1.0, 2.0]), checks=FIRST_ORDER)
    assert report.failed == ("batching",)
    finding = report.check("batching").findings[0]
    assert finding.what == "vmap(fn) vs loop"
    assert finding.location == "out[2]"
    assert (finding.expected, finding.actual) == (4.0, 6.0)


def test_user_vjp_that_is_not_the_transpose_of_the_user_jvp_fails_transpose():
    A = jnp.array([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])
    fn = lambda x: A @ x
    jvp_fn = lambda x, t: A @ t
    wrong_vjp = lambda x, c: A.T.at[2, 1].set(2.0) @ c    # BUG: entry (1, 2) of Aᵀ
    report = jaxcheck.check_rules(fn, jnp.ones(3), jvp_fn=jvp_fn, vjp_fn=wrong_vjp,
                                  checks=FIRST_ORDER)
    assert report.failed == ("transpose",)
    located = [f for f in report.check("transpose").findings if f.what.startswith("J from")]
    assert located[0].location == "d out[1]/d[2]"
    assert (located[0].expected, located[0].actual) == (3.0, 2.0)
    whole = [f for f in report.check("transpose").findings if f.what.startswith("<c,")]
    assert abs(whole[0].expected - whole[0].actual) > whole[0].tolerance > 0


def test_primitive_whose_transpose_rule_is_not_its_jvp_transposed_fails_transpose():
    from jax.extend.core import Primitive
    from jax.interpreters import ad, batching, mlir

    double = Primitive("jaxcheck_test_double")           # x -> 2x, a jax.extend primitive
    double.def_impl(lambda x: 2.0 * x)
    double.def_abstract_eval(lambda x: x)
    mlir.register_lowering(double, mlir.lower_fun(lambda x: 2.0 * x, multiple_results=False))
    ad.primitive_jvps[double] = lambda p, t: (double.bind(p[0]), double.bind(t[0]))
    ad.primitive_transposes[double] = lambda ct, x: [3.0 * ct]    # BUG: 3, not 2
    batching.primitive_batchers[double] = lambda args, dims: (double.bind(args[0]), dims[0])
    report = jaxcheck.check_rules(double.bind, jnp.array([1.0, 2.0]), checks=FIRST_ORDER)
    assert report.failed == ("transpose",)
    located = next(f for f in report.findings if f.what.startswith("J from"))
    assert (located.location, located.expected, located.actual) == ("d out[0]/d[0]", 2.0, 3.0)


def test_rule_that_reads_a_python_value_differs_under_jit():
    def bwd(x, g):
        try:  # a Python-side clip: concrete in eager evaluation, not under jit
            limit = float(jnp.max(jnp.abs(x)))
        except jax.errors.ConcretizationTypeError:
            limit = 1.0
        return (g * jnp.cos(x) * limit,)

    f = _sin_with_bwd(bwd)
    report = jaxcheck.check_rules(f, jnp.linspace(0.5, 2.0, 4),
                                  checks=("compilation", "contracts"))
    assert report.failed == ("compilation",)
    finding = report.check("compilation").findings[0]
    assert finding.what == "jit(jax.vjp) vs eager"
    assert abs(finding.expected - finding.actual) > finding.tolerance


def test_jvp_rule_with_a_concrete_fast_path_fails_linearize():
    @jax.custom_jvp
    def f(x):
        return jnp.sin(x)

    @f.defjvp
    def _rule(primals, tangents):
        (x,), (t,) = primals, tangents
        if isinstance(t, jax.core.Tracer):
            return f(x), jnp.cos(x) * t
        return f(x), jnp.cos(x) * t * 1.001       # BUG: the eager-only path is off

    report = jaxcheck.check_rules(f, jnp.linspace(0.1, 1.0, 4), checks=("linearize",))
    assert report.failed == ("linearize",)
    assert report.check("linearize").findings[0].what == "linearize(t) vs jvp(t)"


def _sin_with_wrong_third_derivative():
    @jax.custom_jvp
    def neg_sin(x):
        return -jnp.sin(x)

    neg_sin.defjvp(lambda p, t: (neg_sin(p[0]), -0.9 * jnp.cos(p[0]) * t[0]))  # BUG: -cos

    @jax.custom_jvp
    def cos(x):
        return jnp.cos(x)

    cos.defjvp(lambda p, t: (cos(p[0]), neg_sin(p[0]) * t[0]))

    @jax.custom_jvp
    def sin(x):
        return jnp.sin(x)

    sin.defjvp(lambda p, t: (sin(p[0]), cos(p[0]) * t[0]))
    return sin


def test_wrong_third_derivative_of_a_custom_jvp_fails_third_order_at_its_entry():
    sin = _sin_with_wrong_third_derivative()
    loss = lambda w: jnp.sum(sin(w) * jnp.array([1.0, 0.0, 0.0]))   # only w[0] matters
    report = jaxcheck.check_rules(loss, jnp.array([0.3, 0.6, 0.9]), checks=("third_order",))
    assert report.failed == ("third_order",)
    finding = report.findings[0]
    assert finding.location == "d3f/d[0]d[0]d[0]"
    assert finding.expected == pytest.approx(-np.cos(0.3), rel=1e-6)
    assert finding.actual == pytest.approx(-0.9 * np.cos(0.3), rel=1e-6)


@pytest.mark.slow
def test_check_third_order_localises_what_first_and_second_order_checks_cannot_see():
    sin = _sin_with_wrong_third_derivative()
    loss = lambda w: jnp.sum(sin(w) * jnp.array([1.0, 0.0, 0.0]))
    failures = jaxcheck.check_third_order(loss, jnp.array([0.3, 0.6, 0.9])).failures
    assert [f.location for f in failures] == ["hess[0][0][0, 0] wrt [0]"]
    assert jaxcheck.check(loss, jnp.array([0.3, 0.6, 0.9])).ok
    assert jaxcheck.check_hessian(loss, jnp.array([0.3, 0.6, 0.9])).ok


def test_order_3_in_check_points_to_check_third_order():
    with pytest.raises(ValueError, match="check_third_order"):
        jaxcheck.check(lambda w: jnp.sum(w ** 4), jnp.ones(2), order=3)


A = jnp.array([[3.0, 1.0], [0.5, 2.0]])
CORRECT = {  # the default run checks two; -m slow the rest
    "jax.nn.softplus": (jax.nn.softplus, (jnp.linspace(-2.0, 2.0, 5),)),
    "jnp.linalg.slogdet": (lambda A: jnp.linalg.slogdet(A)[1], (A,)),
}
MORE_CORRECT = {
    "jax.nn.softmax": (jax.nn.softmax, (jnp.linspace(-1.0, 1.5, 4),)),
    "jax.nn.gelu": (jax.nn.gelu, (jnp.linspace(-2.0, 2.0, 5),)),
    "jax.nn.logsumexp": (jax.nn.logsumexp, (jnp.linspace(-1.0, 1.5, 4),)),
    "jax.nn.log_softmax": (jax.nn.log_softmax, (jnp.linspace(-1.0, 1.5, 4),)),
    "jnp.linalg.solve": (jnp.linalg.solve, (A, jnp.array([1.0, -1.0]))),
    "jnp.linalg.inv": (jnp.linalg.inv, (A,)),
    "jnp.linalg.eigh": (lambda A: jnp.linalg.eigh(A + A.T)[0], (A,)),
    "jnp.linalg.norm": (jnp.linalg.norm, (jnp.array([3.0, -4.0, 1.0]),)),
}


@pytest.mark.parametrize("name", [*sorted(CORRECT), *(pytest.param(n, marks=pytest.mark.slow)
                                                      for n in sorted(MORE_CORRECT))])
def test_correct_jax_nn_and_linalg_functions_pass_every_check(name):
    fn, (primals, *args) = {**CORRECT, **MORE_CORRECT}[name]
    report = jaxcheck.check_rules(fn, primals, *args)
    assert report.ok, str(report)
    assert all(c.compared > 0 for c in report.checks), str(report)


def test_custom_vjp_says_which_checks_do_not_apply():
    f = _sin_with_bwd(lambda x, g: (g * jnp.cos(x),))
    report = jaxcheck.check_rules(f, jnp.linspace(0.1, 1.0, 3), checks=FIRST_ORDER)
    assert report.ok
    statuses = {c.name: c.status for c in report.checks}
    assert statuses["transpose"] == statuses["linearize"] == "NOT_APPLICABLE"
    assert "custom_vjp" in report.check("transpose").notes[0]


def test_bwd_without_symbolic_zero_support_fails_contracts():
    @jax.custom_vjp
    def two(x):
        return jnp.sin(x), jnp.cos(x)

    def bwd(x, g):
        return (g[0] * jnp.cos(x) - g[1] * jnp.sin(x),)   # BUG: g[1] may be a SymbolicZero

    two.defvjp(lambda x: (two(x.value), x.value), bwd, symbolic_zeros=True)
    report = jaxcheck.check_rules(two, jnp.linspace(0.1, 1.0, 3), checks=("contracts",))
    assert report.failed == ("contracts",)
    assert any("alone" in f.what and "TypeError" in f.message for f in report.findings)


def test_integer_input_gets_a_float0_cotangent():
    fn = lambda p: p["w"] * p["n"]
    report = jaxcheck.check_rules(fn, {"w": jnp.ones(2), "n": jnp.array(3)},
                                  checks=("contracts",))
    assert report.ok
    assert "integer input" in " ".join(report.check("contracts").notes)
    wrong_vjp = lambda p, c: {"w": c * p["n"], "n": jnp.ones((), jnp.float32)}
    bad = jaxcheck.check_rules(fn, {"w": jnp.ones(2), "n": jnp.array(3)}, vjp_fn=wrong_vjp,
                               checks=("contracts",))
    assert bad.failed == ("contracts",)
    assert bad.findings[0].location == "['n']"


def test_report_text_names_the_check_the_location_and_the_tolerance():
    f = _sin_with_bwd(lambda x, g: (g * jnp.cos(x) + 1e-3,))
    text = str(jaxcheck.check_rules(f, jnp.linspace(0.1, 1.0, 4), checks=("contracts",)))
    assert text.startswith("jaxcheck rules: FAIL - contracts")
    assert "[contracts] jax.vjp of a zero cotangent at vjp[0]: expected 0" in text
    assert "tolerance 0.00e+00" in text


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="checks"):
        jaxcheck.check_rules(jnp.sin, jnp.ones(2), checks=("transposes",))
    with pytest.raises(TypeError, match="mode"):
        jaxcheck.check_rules(jnp.sin, jnp.ones(2), mode="fast")
    with pytest.raises(TypeError, match="vjp_fn"):
        jaxcheck.check_rules(jnp.sin, jnp.ones(2), vjp_fn=3)
    with pytest.raises(ValueError, match="primals"):
        jaxcheck.check_rules(jnp.sin, jnp.arange(3))


def test_check_with_rules_puts_the_rules_report_next_to_the_verdicts():
    f = _sin_with_bwd(lambda x, g: (g * jnp.cos(x) + 1e-3,))
    loss = lambda w: jnp.sum(f(w))
    report = jaxcheck.check(loss, jnp.linspace(0.1, 1.0, 3), rules=True)
    assert not report.ok
    assert report.rules is not None and "contracts" in report.rules.failed
    assert "jaxcheck rules: FAIL" in str(report)
    assert report.to_dict()["rules"]["ok"] is False
    assert jaxcheck.check(loss, jnp.linspace(0.1, 1.0, 3)).rules is None
