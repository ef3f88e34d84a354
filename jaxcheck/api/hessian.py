"""`check_hessian`: second derivatives, as the Jacobian of the gradient.

The gradient (`grad_fn`, or `jax.grad(fn)` w.r.t. the checked leaves) is a tree-valued
function of the params; its Jacobian is the Hessian. Column j is a central difference of the
gradient along component j (2 gradient evaluations), compared entry by entry with JAX's own
differentiation of the gradient: Hessian-vector products by forward-over-reverse (`jax.jvp`
of the gradient) and rows by reverse-over-reverse (`jax.vjp` of the gradient). A wrong
second-derivative rule (e.g. a `jax.custom_jvp` whose JVP rule is right but not differentiated
correctly) shows up as entries (gradient leaf, index; param leaf, index) outside tolerance.

A hand-written Hessian-vector product is a JVP of the gradient: check it with
`check_jacobian(jax.grad(loss), params, *args, jvp_fn=hvp)`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax

from ..evaluation.analytic_jacobian import Source
from ..inputs.options import Options, parse_options
from ..inputs.precision import PrecisionChoice
from ..inputs.prepare import prepared
from ..inputs.problem import Problem
from ..inputs.pytree import Split, Structure
from ..inputs.validation import require_scalar_loss, trace_loss
from ..inputs.vector_problem import VectorProblem
from ..report.jacobian import JacobianReport
from .jacobian import compare


def of_checked_leaves(fn: Callable[..., Any], structure: Structure, params: Any,
                      args: tuple) -> tuple[Callable[..., Any], list[Any], list[int]]:
    """`fn` as a function of the checked leaves' values alone (ints and keys are not
    differentiable), with params' leaves and the positions of the checked ones."""
    treedef = structure.treedef
    leaves = treedef.flatten_up_to(params)
    checked = list(structure.checked_at)

    def loss(values):
        moved = list(leaves)
        for k, value in zip(checked, values):
            moved[k] = value
        return fn(jax.tree_util.tree_unflatten(treedef, moved), *args)

    return loss, leaves, checked


@dataclasses.dataclass(frozen=True)
class _GradientOfChecked:
    """`jax.grad(fn)` w.r.t. the checked leaves only (ints and keys are not differentiable),
    returned as a tree like params with only those leaves. Hashable: a compilation key."""

    fn: Callable[..., Any]
    params: Structure

    def __call__(self, params: Any, *args: Any) -> Any:
        treedef = self.params.treedef
        loss, leaves, checked = of_checked_leaves(self.fn, self.params, params, args)
        grads = jax.grad(loss)([leaves[k] for k in checked])
        out: list[Any] = [None] * len(leaves)
        for k, g in zip(checked, grads):
            out[k] = g
        return jax.tree_util.tree_unflatten(treedef, out)


def check_second_order(problem: Problem, p: Split, a: Split,
                       grad_fn: Callable[..., Any] | None, opts: Options,
                       precision: PrecisionChoice) -> JacobianReport:
    """The Hessian (JAX's AD of the gradient, forward and reverse) against central differences
    of the gradient; `p`, `a` already split and cast to the working precision."""
    if opts.mode != "full" or opts.method != "central":
        raise NotImplementedError(f"order=2 with mode={opts.mode!r}, method={opts.method!r} "
                                  f"(only 'full', 'central')")
    gradient = grad_fn if grad_fn is not None else _GradientOfChecked(problem.fn, p.structure)
    vector = VectorProblem(gradient, p.structure, a.structure, p.checked)
    sources = [Source("rev"), Source("fwd")]
    return compare(vector, p, a, sources, opts, precision, (False,) * len(p.checked),
                   who="grad_fn" if grad_fn is not None else "jax.grad(fn)", output_name="grad")


def check_hessian(fn: Callable[..., Any], params: Any, *args: Any,
                  grad_fn: Callable[..., Any] | None = None, **options: Any) -> JacobianReport:
    """Check the second derivatives of the scalar loss `fn(params, *args)`.

    The gradient (`grad_fn`, default `jax.grad(fn)`) is checked as a function of `params`: its
    Jacobian, the Hessian, from JAX's forward-over-reverse and reverse-over-reverse
    differentiation, against central differences of the gradient, entry by entry.

    **Arguments:** as for `jaxcheck.check` (`fn`, `params`, `*args`, `grad_fn`, `**options`).

    **Returns:** a `jaxcheck.JacobianReport` whose blocks are (gradient leaf, param leaf);
    failures are named like `grad['a'][1, 0] wrt ['a'][0, 0]`.

    **Example:**

    ```python
    >>> import jax.numpy as jnp, jaxcheck
    >>> jaxcheck.check_hessian(lambda w: jnp.sum(jnp.sin(w) * w[0]), jnp.ones(3)).ok
    True

    ```
    """
    if isinstance(fn, Mapping):
        raise TypeError("fn: check_hessian takes one loss function; for named terms, check "
                        "each term (or their sum) separately")
    opts = parse_options(options)
    if opts.order != 1:
        raise ValueError(f"order: check_hessian checks second derivatives itself; leave order "
                         f"at its default, got order={opts.order!r}")
    with prepared(fn, params, args, grad_fn, opts) as inputs:
        _, out = trace_loss(inputs.problem, inputs.params, inputs.args)
        require_scalar_loss(out)
        return check_second_order(inputs.problem, inputs.params, inputs.args, inputs.grad_fn,
                                  opts, inputs.precision)
