"""The public entry points: `check` and `assert_gradients`."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..inputs import placement
from ..inputs.options import Options, parse_options
from ..inputs.precision import (
    effective_epsilon,
    jaxpr_epsilon,
    machine_epsilon,
)
from ..inputs.prepare import Inputs, prepared
from ..inputs.validation import require_scalar_loss, trace_loss
from ..numerics import differences as d
from ..numerics.dispatch import FIRST_PASS_EXPONENTS, run_mode
from ..plan.gradients import AnalyticGradient
from ..plan.setup import leaf_tasks, require_mode_and_method, shared_setup
from ..report.report import Report
from .loss_terms import check_terms
from .reference import check_against_reference, native_options
from .rules import check_rules


def check(fn: Callable[..., Any], params: Any, *args: Any,
          grad_fn: Callable[..., Any] | None = None,
          reference: Callable[..., Any] | None = None, **options: Any) -> Report:
    """Check the gradient of the scalar loss `fn(params, *args)` with respect to `params`.

    Every floating component of `params` gets a verdict: PASS, FAIL (the analytic value is
    outside the error bound of its finite-difference estimate) or INCONCLUSIVE (at a kink, where
    the analytic value is a valid subgradient).

    **Arguments:**

    - `fn`: the loss, `fn(params, *args) -> scalar`.
    - `params`: any pytree. Only floating leaves are checked; int/bool leaves, strings and PRNG
      keys are passed through unchanged. A Flax nnx or Equinox module, or Flax linen
      variables, are checked as such (see the guide's "Frameworks, argnums and has_aux" page).
    - `*args`: further arguments of `fn` (data, labels, PRNG keys); not checked.
    - `grad_fn`: the gradient under test, `grad_fn(params, *args)` returning a pytree like
      `params` (integer leaves may be zeros or float0). Default: `jax.grad(fn)`.
    - `reference`: for a kernel that runs only in low precision (a Pallas kernel, a fused
      `custom_vjp`), a plain implementation of the same loss, `reference(params, *args)`,
      that runs in float64. `fn` and `grad_fn` are then evaluated in their native precision
      and compared with the float64 reference and with their own finite differences; the
      result is a `jaxcheck.ReferenceReport` that says whether the forward, the backward or
      both disagree. Default None.
    - `**options`: see `jaxcheck.Options` (`eps`, `safety`, `batch_size`, `precision`, ...).

    **Returns:** a `jaxcheck.Report` (a `jaxcheck.ReferenceReport` with `reference`);
    `report.ok` is False iff some component FAILs.

    **Example:**

    ```python
    >>> import jax, jax.numpy as jnp, jaxcheck
    >>> loss = lambda p, x: jnp.sum(jnp.tanh(x @ p["w"]) ** 2)
    >>> params, x = {"w": jnp.ones((3, 2))}, jnp.arange(6.0).reshape(2, 3) / 6
    >>> jaxcheck.check(loss, params, x).ok
    True
    >>> wrong = lambda p, x: {"w": 2 * jax.grad(loss)(p, x)["w"]}
    >>> jaxcheck.check(loss, params, x, grad_fn=wrong).ok
    False

    ```
    """
    opts = parse_options(options)
    if opts.order == 3:
        raise ValueError("order: check verifies first derivatives and returns a Report; got "
                         "order=3. Third derivatives have their own entry point: "
                         "jaxcheck.check_third_order(fn, params, *args), which returns a "
                         "JacobianReport.")
    if opts.order != 1:
        raise ValueError(f"order: check verifies first derivatives and returns a Report; got "
                         f"order={opts.order!r}. Second derivatives have their own entry point: "
                         f"jaxcheck.check_hessian(fn, params, *args), which returns a "
                         f"JacobianReport.")
    if isinstance(fn, Mapping):  # named loss terms, checked one by one and summed
        if reference is not None:
            raise ValueError("reference: not supported with named loss terms (fn is a "
                             "mapping); check the kernel's loss as one function")
        return check_terms(check, fn, params, *args, grad_fn=grad_fn, **options)
    if reference is not None:
        opts = native_options(opts)
    with prepared(fn, params, args, grad_fn, opts, reference) as inputs:
        if reference is not None:
            return check_against_reference(inputs, opts, _check_prepared)
        return _check_prepared(inputs, opts)


def _check_prepared(inputs: Inputs, opts: Options) -> Report:
    problem, p, a, grad_fn = inputs.problem, inputs.params, inputs.args, inputs.grad_fn
    closed, out = trace_loss(problem, p, a)   # once: validation and the loss's precision
    require_scalar_loss(out)
    eps_work = max(machine_epsilon(x.dtype) for x in p.checked_values)
    eps_f = jaxpr_epsilon(closed, default=eps_work)
    analytic = AnalyticGradient(problem, p, tuple(a.dynamic), grad_fn)
    if grad_fn is None:
        eps_g = eps_f
    else:
        eps_g = effective_epsilon(
            lambda pd, ad: grad_fn(p.structure.rebuild(pd), *a.structure.rebuild(ad)),
            p.dynamic, a.dynamic, default=eps_work)
    rel_step = opts.eps if opts.eps is not None else d.relative_step(
        eps_f, FIRST_PASS_EXPONENTS[opts.method])
    require_mode_and_method(opts.mode, opts.method)
    tasks = leaf_tasks(problem, p, a, analytic, inputs.user_dtypes, eps_f, eps_g, rel_step,
                       opts.safety, opts.batch_size,
                       sharp=inputs.precision.used == "native")
    # every mode: the determinism check, and the gradient's rounding split from its final cast
    tasks = shared_setup(tasks, opts.mode, fn_trace=closed)
    leaves, extra = run_mode(tasks, opts)
    info = {"eps_f": eps_f, "eps_g": eps_g, "rel_step": rel_step, **inputs.precision.info(),
            "mode": opts.mode, "method": opts.method, **extra,
            **placement.describe(p.paths, p.checked_values)}
    rules = None
    if opts.rules:  # on fn as checked: argnums, has_aux and framework objects mapped
        rules = check_rules(problem.fn, p.structure.rebuild(p.dynamic),
                            *a.structure.rebuild(a.dynamic), seed=opts.seed,
                            safety=opts.safety)
    return Report(leaves, info=info, max_failures=opts.max_failures, rules=rules)


def assert_gradients(fn: Callable[..., Any], params: Any, *args: Any,
                     grad_fn: Callable[..., Any] | None = None,
                     reference: Callable[..., Any] | None = None, **options: Any) -> Report:
    """Like `check`, but raise `AssertionError` with the report's table if any component FAILs.

    **Returns:** the `Report` when every component passes (or is INCONCLUSIVE at a kink).

    **Example:**

    ```python
    >>> import jax.numpy as jnp, jaxcheck
    >>> jaxcheck.assert_gradients(lambda w: jnp.sum(jnp.sin(w)), jnp.ones(4)).ok
    True

    ```
    """
    report = check(fn, params, *args, grad_fn=grad_fn, reference=reference, **options)
    if not report.ok:
        raise AssertionError(str(report))
    return report
