"""Tolerances from rounding alone: how far two computations of the same value may differ.

Every rule check compares two computations that are equal in exact arithmetic (a JVP and a
VJP through the transpose identity, `vmap` and a loop, `jit` and eager, `linearize` and
`jvp`). In floating point they may differ only by rounding, and this module bounds that.

**The bound.** A value computed by a chain of `ops` floating-point operations, each of which
rounds with a relative error of at most ε (the machine epsilon of the least precise dtype the
computation uses), is off by at most ≈ ops·ε times the magnitudes of the terms it combined
(Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §3.1: γₙ = nε/(1−nε) for
n operations, and §3.5 for sums of products, |fl(xᵀy) − xᵀy| ≤ γₙ·|x|ᵀ|y|). Two computations
of the same value differ by at most the sum of their errors. So:

- `inner_product_tolerance`: for ⟨c, J·t⟩ against ⟨Jᵀ·c, t⟩, the summed terms are cᵢJᵢⱼtⱼ,
  of total magnitude Σ|cᵢ|(|J||t|)ᵢ on one side and Σ(|Jᵀ||c|)ⱼ|tⱼ| on the other, and `ops`
  counts the operations of both derivative computations plus the terms of both sums.
- `elementwise_tolerance`: for two arrays a, b of the same leaf, safety·ops·ε·(|a|+|b|+M),
  where M holds, per entry, the magnitudes of the terms the entry was summed from. For a
  JVP or VJP, which is linear in its tangent or cotangent, `magnitudes.term_magnitudes`
  computes them (|J|·|t|, |Jᵀ|·|c|): a gradient at a least-squares optimum, ~1e-8 summed from
  terms ~1e-2, gets a tolerance from the terms. For the function's own values, where no such
  evaluation exists, M is the leaf's largest |a| or |b| (an entry formed by cancellation is
  judged against the leaf's scale, normwise).

`ops` is the number of equations of the computation's jaxpr (`operation_count`), nested
calls included: an over-estimate of the chain's depth, so the bound errs on the side of no
false alarm. A rule that is inconsistent is off by O(1) relative to the values (a missing
term, a wrong dtype, a cotangent-independent term), far outside ops·ε·|values| for any
reasonable ops: 1000 operations in float32 still leave a relative tolerance of ~2e-4.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _jaxpr
from ..inputs.precision import lowest_float_eps, machine_epsilon


def operation_count(f: Callable[..., Any], *example: Any) -> int:
    """Equations of `f`'s jaxpr at `example`, nested bodies included (at least 1); 1 if `f`
    cannot be traced (the caller reports that failure itself)."""
    try:
        closed = jax.make_jaxpr(f)(*example)
    except Exception:
        return 1
    return max(1, sum(1 for _ in _jaxpr.equations(closed.jaxpr)))


def working_epsilon(f: Callable[..., Any], leaves: Any, *example: Any) -> float:
    """Machine epsilon of the least precise floating dtype among `leaves` and the values `f`
    computes at `example` (a float64 function that casts to float32 inside rounds like
    float32)."""
    eps = max([machine_epsilon(x.dtype) for x in jax.tree_util.tree_leaves(leaves)
               if jnp.issubdtype(jnp.result_type(x), jnp.floating)] + [0.0])
    try:
        closed = jax.make_jaxpr(f)(*example)
    except Exception:
        return eps
    return max(eps, lowest_float_eps(closed.jaxpr))


def elementwise_tolerance(a: np.ndarray, b: np.ndarray, eps: float, ops: int,
                          safety: float, terms: np.ndarray | None = None) -> np.ndarray:
    """Per entry: safety·ops·ε·(|a|+|b|+M), M = `terms` (the magnitudes of the summed terms)
    or, without them, the largest |a| or |b| of the leaf."""
    a, b = np.abs(np.asarray(a, np.float64)), np.abs(np.asarray(b, np.float64))
    if terms is None:
        finite = np.concatenate([a[np.isfinite(a)].ravel(), b[np.isfinite(b)].ravel(), [0.0]])
        scale: Any = finite.max()
    else:
        scale = np.broadcast_to(np.asarray(terms, np.float64), a.shape)
    return safety * ops * eps * (a + b + scale)


def inner_product_tolerance(terms_left: np.ndarray, terms_right: np.ndarray, eps: float,
                            ops: int, safety: float) -> float:
    """safety·(ops + number of terms)·ε·(Σ|left terms| + Σ|right terms|), the terms being
    |cᵢ|(|J||t|)ᵢ and (|Jᵀ||c|)ⱼ|tⱼ|."""
    n = terms_left.size + terms_right.size
    magnitude = float(np.sum(np.abs(terms_left)) + np.sum(np.abs(terms_right)))
    return safety * (ops + n) * eps * magnitude
