"""From what the user passed to what the pipeline checks, the same for every entry point.

`prepared(...)` validates the callables, maps framework objects, `argnums` and `has_aux` onto
`fn(params, *args)`, replaces complex leaves by real views, splits the pytrees into checked
and carried leaves, and makes the working copies of every floating leaf inside the working
precision (`precision.working_precision`): float64, or under `precision="native"` the leaves'
own dtypes with bfloat16/float16 upcast to float32 (`working_copies`, used by `check_jacobian`
too). Sharded params stay on their mesh, and the other inputs join them there (`placement`).
`precision="auto"` becomes one of the two for the device the params live on
(`precision.choose_precision`).
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import jax

from .adapters import canonical
from .callables import keyed
from .complex_params import real_view
from .options import Options
from .placement import mesh_of, onto_mesh
from .precision import (
    PrecisionChoice,
    cast_floating,
    choose_precision,
    native_dtype,
    working_precision,
)
from .problem import Problem
from .pytree import Split, replace_dynamic, split
from .validation import require_checkable, require_concrete


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The loss and its split inputs, as working copies (inside `prepared`'s precision)."""

    problem: Problem
    params: Split
    args: Split
    grad_fn: Callable[..., Any] | None
    user_dtypes: tuple[str, ...]      # per checked leaf, the dtype the user gave
    precision: PrecisionChoice        # asked for ("auto", ...) and used ("float64", "native")
    reference: Problem | None = None  # `check(..., reference=)`: the same loss, plainly written


def working_copies(s: Split, dtype: Any | None) -> Split:
    """`s` with its floating leaves cast to `dtype`, or with `dtype=None` (native precision)
    kept as they are except bfloat16/float16, upcast to float32."""
    return replace_dynamic(s, [cast_floating(x, dtype or native_dtype(x)) for x in s.dynamic])


def on_one_mesh(p: Split, a: Split) -> tuple[Split, Split]:
    """Where params or args are sharded over a mesh, every other dynamic leaf replicated over
    it, so that each evaluation is one program under the params' own shardings."""
    mesh = mesh_of((*p.dynamic, *a.dynamic))
    if mesh is None:
        return p, a
    return (replace_dynamic(p, [onto_mesh(x, mesh) for x in p.dynamic]),
            replace_dynamic(a, [onto_mesh(x, mesh) for x in a.dynamic]))


def require_callables(fn: Any, grad_fn: Any, reference: Any = None) -> None:
    if not callable(fn):
        raise TypeError(f"fn: expected a callable loss fn(params, *args), got {type(fn).__name__}")
    if grad_fn is not None and not callable(grad_fn):
        raise TypeError("grad_fn: expected a callable grad_fn(params, *args) or None, "
                        f"got {type(grad_fn).__name__}")
    if reference is not None and not callable(reference):
        raise TypeError("reference: expected a callable reference(params, *args) computing the "
                        f"same loss as fn, or None, got {type(reference).__name__}")


@contextlib.contextmanager
def prepared(fn: Callable[..., Any], params: Any, args: tuple[Any, ...],
             grad_fn: Callable[..., Any] | None, opts: Options,
             reference: Callable[..., Any] | None = None) -> Iterator[Inputs]:
    """The checked inputs of `check(fn, params, *args, grad_fn=...)`, in working precision
    for the duration of the `with` block. `reference` (same signature as `fn`) is mapped onto
    the same checked and carried inputs as `fn`."""
    require_callables(fn, grad_fn, reference)
    fn, grad_fn, reference = keyed(fn), keyed(grad_fn), keyed(reference)
    require_concrete(params, args)
    # argnums, has_aux and framework objects (nnx, linen, Equinox) -> fn(params, *args).
    user_params, user_args = params, args
    fn, params, args, grad_fn = canonical(fn, params, args, grad_fn, opts.argnums,
                                          opts.has_aux)
    if reference is not None:
        reference = canonical(reference, user_params, user_args, None, opts.argnums,
                              opts.has_aux)[0]
        reference = real_view(reference, params, None)[0]
    fn, params, grad_fn = real_view(fn, params, grad_fn)  # complex leaves as (re, im) pairs
    p = split(params)
    if not p.checked:
        raise ValueError("params: expected a pytree with at least one floating-point array "
                         f"leaf to check; got {jax.tree_util.tree_structure(params)}")
    require_checkable(p)
    a = split(args, check_floats=False)
    user_dtypes = tuple(str(x.dtype) for x in p.checked_values)
    precision = choose_precision(opts.precision, p.dynamic)
    with working_precision(precision.used) as dtype:
        p, a = working_copies(p, dtype), working_copies(a, dtype)
        p, a = on_one_mesh(p, a)
        yield Inputs(Problem(fn, p.structure, a.structure), p, a, grad_fn, user_dtypes,
                     precision, None if reference is None else
                     Problem(reference, p.structure, a.structure))
