"""Complex leaves as pairs of real numbers, with JAX's convention for their gradients.

A complex parameter z = x + iy is two real parameters, and finite differences perturb x and y
separately. Its *real view* is the real array `stack([x, y], -1)` of shape `z.shape + (2,)`:
component `[..., 0]` is the real part, `[..., 1]` the imaginary part.

JAX's convention (checked numerically in `tests/test_complex.py`): for a real f of complex z,
`jax.grad(f)(z) = ∂f/∂x − i·∂f/∂y`, the conjugate of the steepest-ascent direction
(`jax.grad(lambda z: jnp.abs(z) ** 2)(3 + 4j) == 6 - 8j`). More generally JAX pairs
cotangents and tangents without conjugation, `Re(ct · jvp(dz)) = Re(vjp(ct) · dz)`, so:

- a VJP result u (complex) is the real-view row `(Re u, −Im u)`;
- the real-view cotangent (a, b) of a complex output w is `ct = a − i·b`;
- the real-view tangent (a, b) of a complex input is `dz = a + i·b`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_complex(x: Any) -> bool:
    if isinstance(x, complex):
        return True
    return (isinstance(x, (jax.Array, np.ndarray, np.generic))
            and bool(jnp.issubdtype(x.dtype, jnp.complexfloating)))


def to_real_view(z: Any) -> Any:
    """`stack([Re z, Im z], -1)`, in z's real dtype (NumPy in, NumPy out)."""
    xp = jnp if isinstance(z, jax.Array) else np
    z = xp.asarray(z)
    return xp.stack([xp.real(z), xp.imag(z)], axis=-1)


def from_real_view(x: Any) -> Any:
    return jax.lax.complex(x[..., 0], x[..., 1])


def cotangent_to_real_view(u: Any) -> Any:
    """A VJP result (or `jax.grad` of a real loss) as its real-view row `(Re u, −Im u)`."""
    u = jnp.asarray(u)
    return jnp.stack([jnp.real(u), -jnp.imag(u)], axis=-1)


def cotangent_from_real_view(c: Any) -> Any:
    """The complex cotangent `a − i·b` whose pairing with w picks `a·Re w + b·Im w`."""
    return jax.lax.complex(c[..., 0], -c[..., 1])


@dataclasses.dataclass(frozen=True)
class _RealViewLoss:
    """`fn` taking params whose complex leaves are given as real views.

    A hashable dataclass, not a closure, so that equal wrappers share compiled programs.
    """

    fn: Callable[..., Any]
    treedef: Any
    complex_leaves: tuple[bool, ...]

    def __call__(self, params: Any, *args: Any) -> Any:
        return self.fn(_restore(self, params), *args)


@dataclasses.dataclass(frozen=True)
class _RealViewGradient:
    """`grad_fn` (JAX's convention for complex leaves) returning real-view gradients."""

    grad_fn: Callable[..., Any]
    treedef: Any
    complex_leaves: tuple[bool, ...]

    def __call__(self, params: Any, *args: Any) -> Any:
        return _gradient_to_real_view(self, self.grad_fn(_restore(self, params), *args))


@dataclasses.dataclass(frozen=True)
class _RealViewVJP:
    """`vjp_fn(primals, cotangents, *args)` on real-view primals, returning real views."""

    vjp_fn: Callable[..., Any]
    treedef: Any
    complex_leaves: tuple[bool, ...]

    def __call__(self, primals: Any, cotangents: Any, *args: Any) -> Any:
        return _gradient_to_real_view(
            self, self.vjp_fn(_restore(self, primals), cotangents, *args))


@dataclasses.dataclass(frozen=True)
class _RealViewJVP:
    """`jvp_fn(primals, tangents, *args)` on real-view primals and tangents (a + ib)."""

    jvp_fn: Callable[..., Any]
    treedef: Any
    complex_leaves: tuple[bool, ...]

    def __call__(self, primals: Any, tangents: Any, *args: Any) -> Any:
        return self.jvp_fn(_restore(self, primals), _restore(self, tangents), *args)


def _gradient_to_real_view(wrapper: Any, tree: Any) -> Any:
    try:
        leaves = wrapper.treedef.flatten_up_to(tree)
    except (ValueError, TypeError):
        return tree  # wrong structure: reported by the caller's validation
    return jax.tree_util.tree_unflatten(wrapper.treedef, [
        cotangent_to_real_view(g) if c and g is not None else g
        for g, c in zip(leaves, wrapper.complex_leaves)])


def _restore(wrapper: Any, params: Any) -> Any:
    leaves = wrapper.treedef.flatten_up_to(params)
    return jax.tree_util.tree_unflatten(wrapper.treedef, [
        from_real_view(x) if c else x for x, c in zip(leaves, wrapper.complex_leaves)])


def real_view(fn: Callable[..., Any], params: Any, grad_fn: Callable[..., Any] | None):
    """`(fn, params, grad_fn)` with every complex leaf of `params` replaced by its real view.

    Unchanged when `params` has no complex leaf. The real part of a complex leaf `z` is then
    reported at index `[..., 0]` and the imaginary part at `[..., 1]`.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    flags = tuple(is_complex(x) for x in leaves)
    if not any(flags):
        return fn, params, grad_fn
    params = jax.tree_util.tree_unflatten(
        treedef, [to_real_view(x) if c else x for x, c in zip(leaves, flags)])
    wrapped_grad = None if grad_fn is None else _RealViewGradient(grad_fn, treedef, flags)
    return _RealViewLoss(fn, treedef, flags), params, wrapped_grad


def real_view_function(fn: Callable[..., Any], primals: Any, vjp_fn: Callable[..., Any] | None,
                       jvp_fn: Callable[..., Any] | None):
    """`(fn, primals, vjp_fn, jvp_fn)` on real views of the complex leaves of `primals`."""
    leaves, treedef = jax.tree_util.tree_flatten(primals)
    flags = tuple(is_complex(x) for x in leaves)
    if not any(flags):
        return fn, primals, vjp_fn, jvp_fn
    primals = jax.tree_util.tree_unflatten(
        treedef, [to_real_view(x) if c else x for x, c in zip(leaves, flags)])
    return (_RealViewLoss(fn, treedef, flags), primals,
            None if vjp_fn is None else _RealViewVJP(vjp_fn, treedef, flags),
            None if jvp_fn is None else _RealViewJVP(jvp_fn, treedef, flags))
