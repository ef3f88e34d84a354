"""`check(..., order=2)`: second derivatives, as the Jacobian of the gradient.

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
from typing import Any, Callable, Optional

import jax

from ..evaluation.analytic_jacobian import Source
from ..inputs.options import Options
from ..inputs.problem import Problem
from ..inputs.pytree import CHECKED, Split, Structure
from ..inputs.vector_problem import VectorProblem
from ..report.jacobian import JacobianReport
from .jacobian import compare


@dataclasses.dataclass(frozen=True)
class _GradientOfChecked:
    """`jax.grad(fn)` w.r.t. the checked leaves only (ints and keys are not differentiable),
    returned as a tree like params with only those leaves. Hashable: a compilation key."""

    fn: Callable[..., Any]
    params: Structure

    def __call__(self, params: Any, *args: Any) -> Any:
        treedef = self.params.treedef
        leaves = treedef.flatten_up_to(params)
        checked = [k for k, kind in enumerate(self.params.kinds) if kind == CHECKED]

        def loss(values):
            moved = list(leaves)
            for k, value in zip(checked, values):
                moved[k] = value
            return self.fn(jax.tree_util.tree_unflatten(treedef, moved), *args)

        grads = jax.grad(loss)([leaves[k] for k in checked])
        out: list[Any] = [None] * len(leaves)
        for k, g in zip(checked, grads):
            out[k] = g
        return jax.tree_util.tree_unflatten(treedef, out)


def check_second_order(problem: Problem, p: Split, a: Split,
                       grad_fn: Optional[Callable[..., Any]], opts: Options) -> JacobianReport:
    """The Hessian (JAX's AD of the gradient, forward and reverse) against central differences
    of the gradient; `p`, `a` already split and cast to the working precision."""
    if opts.mode != "full" or opts.method != "central":
        raise NotImplementedError(f"order=2 with mode={opts.mode!r}, method={opts.method!r} "
                                  f"(only 'full', 'central')")
    gradient = grad_fn if grad_fn is not None else _GradientOfChecked(problem.fn, p.structure)
    vector = VectorProblem(gradient, p.structure, a.structure, p.checked)
    sources = [Source("rev"), Source("fwd")]
    return compare(vector, p, a, sources, opts, (False,) * len(p.checked),
                   who="grad_fn" if grad_fn is not None else "jax.grad(fn)", output_name="grad")
