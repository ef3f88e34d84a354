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

- `inner_product_tolerance`: for ⟨c, J·t⟩ against ⟨Jᵀ·c, t⟩, the summed terms are the products
  cᵢ(Jt)ᵢ and (Jᵀc)ⱼtⱼ, and `ops` counts the operations of both derivative computations plus
  the terms of both sums: safety·ops·ε·(Σ|cᵢ(Jt)ᵢ| + Σ|(Jᵀc)ⱼtⱼ|).
- `elementwise_tolerance`: for two arrays a, b of the same leaf, safety·ops·ε·(|a|+|b|+m),
  m = the leaf's largest |a| or |b|: the terms an entry combined are bounded by the leaf's
  scale (an entry formed by cancellation is judged against that scale, normwise), which we
  cannot see entry by entry.

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
                          safety: float) -> np.ndarray:
    """Per entry: safety·ops·ε·(|a|+|b|+m), m the largest |a| or |b| of the leaf."""
    a, b = np.abs(np.asarray(a, np.float64)), np.abs(np.asarray(b, np.float64))
    finite = np.concatenate([a[np.isfinite(a)].ravel(), b[np.isfinite(b)].ravel(), [0.0]])
    return safety * ops * eps * (a + b + finite.max())


def inner_product_tolerance(terms_left: np.ndarray, terms_right: np.ndarray, eps: float,
                            ops: int, safety: float) -> float:
    """safety·(ops + number of terms)·ε·(Σ|left terms| + Σ|right terms|)."""
    n = terms_left.size + terms_right.size
    magnitude = float(np.sum(np.abs(terms_left)) + np.sum(np.abs(terms_right)))
    return safety * (ops + n) * eps * magnitude
