"""Loss terms checked separately: `check({"data": data_loss, "l2": l2}, params, ...)`.

A loss is often a sum of terms written (and differentiated) separately: a data term and a
regulariser, an auxiliary loss. Checked as one sum, a wrong regulariser derivative shows up as
"some components of W are wrong"; checked term by term, it is pinned on the regulariser.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ..report.report import Report
from ..report.terms import TermsReport


def _sum_of(fns: Mapping[str, Callable[..., Any]]) -> Callable[..., Any]:
    def total(params: Any, *args: Any) -> Any:
        values = [f(params, *args) for f in fns.values()]
        out = values[0]
        for value in values[1:]:
            out = out + value
        return out
    return total


def _add_leaves(*xs: Any) -> Any:
    # Integer / float0 leaves (not differentiable) come back as zeros: keep the first.
    if all(hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact) for x in xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out
    return xs[0]


def _sum_of_gradients(grads: Mapping[str, Callable[..., Any]]) -> Callable[..., Any]:
    def total(params: Any, *args: Any) -> Any:
        trees = [g(params, *args) for g in grads.values()]
        return jax.tree_util.tree_map(_add_leaves, *trees)
    return total


def check_terms(check: Callable[..., Report], fns: Mapping[str, Callable[..., Any]],
                params: Any, *args: Any, grad_fn: Any = None, **options: Any) -> TermsReport:
    """Check each named loss term and their sum; see `jaxcheck.check`.

    **Arguments:**

    - `check`: the single-loss checker (`jaxcheck.check`).
    - `fns`: a mapping of names to loss terms `term(params, *args) -> scalar`; the loss is
      their sum.
    - `grad_fn`: None (every term by `jax.grad`), one callable for the gradient of the sum
      (terms are then checked with `jax.grad` of each term, the sum with `grad_fn`), or a
      mapping with the same names giving each term's gradient (the sum is checked with their
      sum).

    **Example:**

    ```python
    >>> import jax, jax.numpy as jnp, jaxcheck
    >>> data = lambda p, x: jnp.sum(jnp.tanh(x @ p["w"]) ** 2)
    >>> l2 = lambda p, x: 0.5 * 1e-2 * jnp.sum(p["w"] ** 2)
    >>> grads = {"data": jax.grad(data),
    ...          "l2": lambda p, x: {"w": 1e-2 * p["w"] * 2}}      # wrong: factor 2
    >>> p, x = {"w": jnp.linspace(-1, 1, 3)}, jnp.ones((2, 3))
    >>> report = jaxcheck.check({"data": data, "l2": l2}, p, x, grad_fn=grads)
    >>> report.ok, report.failing_terms, report.terms["data"].ok
    (False, ('l2',), True)

    ```
    """
    if not fns:
        raise ValueError("fn: expected a callable or a non-empty mapping of named loss terms, "
                         "got an empty mapping")
    for name, term in fns.items():
        if not isinstance(name, str) or not callable(term):
            raise TypeError(f"fn: expected a mapping of names (str) to loss terms "
                            f"term(params, *args); got {name!r}: {type(term).__name__}")
    if isinstance(grad_fn, Mapping):
        if set(grad_fn) != set(fns):
            raise ValueError(f"grad_fn: expected a gradient for each loss term "
                             f"{sorted(fns)}, got gradients for {sorted(grad_fn)}")
        term_grads = {name: grad_fn[name] for name in fns}
        sum_grad = _sum_of_gradients(term_grads)
    elif grad_fn is None or callable(grad_fn):
        term_grads = dict.fromkeys(fns)
        sum_grad = grad_fn
    else:
        raise TypeError(f"grad_fn: expected None, a callable or a mapping of per-term "
                        f"gradients, got {type(grad_fn).__name__}")
    terms = {name: check(fns[name], params, *args, grad_fn=term_grads[name], **options)
             for name in fns}
    total = check(_sum_of(fns), params, *args, grad_fn=sum_grad, **options)
    return TermsReport(total.leaves, info=dict(total.info, terms=tuple(fns)),
                       max_failures=total.max_failures, terms=terms)
