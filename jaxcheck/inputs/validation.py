"""Checks of `check`'s inputs, so that every bad input ends in a short, specific error.

Each check names the argument, what was given and what was expected. The user's own code
(`fn`, `grad_fn`) is called through `user_call`, which keeps the user's exception (its type
and traceback) and adds a note saying which call raised it, and turns JAX's tracing errors
into a `TypeError` that says why `fn` must be traceable.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np

from .._errors import NonFiniteGradientError, NonFiniteLossError
from .placement import finite_and_squares, to_host
from .pytree import Split
from .traces import Memo, shapes_key

# Errors JAX raises when Python code needs a concrete value that tracing cannot give
# (`if x > 0`, `float(x)`, `np.asarray(x)`, a data-dependent shape such as `x[x > 0]`).
_TRACING_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.NonConcreteBooleanIndexError,
)


_NOTE = "(raised while jaxcheck evaluated"


def _index(k: int, shape: tuple[int, ...]) -> str:
    return str(list(map(int, np.unravel_index(k, shape)))) if shape else ""


def _first_nonfinite(x: np.ndarray) -> int:
    return int(np.flatnonzero(~np.isfinite(np.asarray(x).reshape(-1)))[0])


def require_concrete(params: Any, args: Sequence[Any]) -> None:
    """Refuse tracers: `check` compiles its own evaluations and needs concrete values."""
    for name, tree in (("params", params), ("args", tuple(args))):
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            if isinstance(leaf, jax.core.Tracer):
                where = f"{name}{jax.tree_util.keystr(path)}"
                raise TypeError(
                    f"{name}: expected concrete arrays, got a JAX tracer at {where} "
                    f"({leaf.aval}). jaxcheck.check was called inside a JAX transformation "
                    f"(jax.jit, jax.vmap, jax.grad, ...); it runs its own compiled "
                    f"evaluations, so call it outside any transformation, on concrete values."
                )
    # Concrete inputs, but a jax.jit is being traced around this call: even a constant
    # becomes a tracer there, and no result could be read back.
    # (a transfer: `jnp.zeros` would compile a program to find out)
    if isinstance(jax.device_put(np.float32(0)), jax.core.Tracer):
        raise TypeError("check: expected to be called outside jax.jit, but it was called while "
                        "a function around it was being traced; call it outside any "
                        "transformation.")


def require_components(who: str, leaves: Sequence[tuple[str, tuple[int, ...]]],
                       kind: str = "", purpose: str = "check") -> None:
    """At least one component among the floating `leaves` ((path, shape) pairs) of `who`
    (`params`, or `fn`'s outputs with `kind="output "`): else an error naming each."""
    if leaves and all(int(np.prod(shape, dtype=np.int64)) == 0 for _, shape in leaves):
        named = ", ".join(f"{path or who}: {tuple(shape)}" for path, shape in leaves)
        raise ValueError(f"{who}: expected at least one floating {kind}component to {purpose}; "
                         f"every floating {kind}leaf has size 0 ({named})")


def require_checkable(p: Split) -> None:
    """At least one floating component, and every checked value finite."""
    require_components("params", [(path, np.shape(x))
                                  for path, x in zip(p.paths, p.checked_values)])
    finite, _ = finite_and_squares(p.checked_values)
    for path, x, ok in zip(p.paths, p.checked_values, finite):
        if not ok:
            x = to_host(x)
            k = _first_nonfinite(x)
            raise ValueError(
                f"params: expected finite values, got {x.reshape(-1)[k]} at "
                f"params{path}{_index(k, x.shape)}; the gradient is checked at params, where "
                f"the loss must be finite")


@contextlib.contextmanager
def user_call(who: str, when: str) -> Iterator[None]:
    """Run user code: tracing errors become a `TypeError`; other errors keep their type and
    get a note naming the call (`who`, e.g. "fn") and the situation (`when`)."""
    try:
        yield
    except _TRACING_ERRORS as e:
        raise TypeError(
            f"{who}: expected a function JAX can trace (jaxcheck evaluates it with jax.jit, "
            f"jax.vmap and jax.grad; here {when}), but tracing it raised {type(e).__name__}: "
            f"Python code "
            f"needed a concrete value (`if x > 0:`, `float(x)`, `np.asarray(x)`, or a shape "
            f"that depends on values). Use jnp.where or jax.lax.cond, or move that logic out "
            f"of {who}. JAX's message: {(str(e).splitlines() or [''])[0]}"
        ) from e
    except jax.errors.UnexpectedTracerError as e:
        raise TypeError(
            f"{who}: a JAX tracer leaked out of a transformation while jaxcheck evaluated it "
            f"{when}; {who} must not keep traced values between calls (global state, "
            f"closures over values from a jax.jit)."
        ) from e
    except Exception as e:
        noted = any(n.startswith(_NOTE) for n in getattr(e, "__notes__", ()))
        add_note = getattr(e, "add_note", None)  # Python >= 3.11
        if add_note is not None and not noted:
            add_note(f"{_NOTE} {who} {when})")
        raise


_loss_traces: Memo[tuple[Any, Any]] = Memo()


def trace_loss(problem: Any, p: Split, a: Split) -> tuple[Any, Any]:
    """Trace `fn` once at params (no compile): its own errors surface here, clearly. Returns
    the closed jaxpr and the shape of the output (kept: a repeated check traces nothing)."""
    def trace() -> tuple[Any, Any]:
        with user_call("fn", "at params"):
            return jax.make_jaxpr(problem.loss, return_shape=True)(p.dynamic, a.dynamic)
    return _loss_traces.get(shapes_key(problem, p.dynamic, a.dynamic, "trace"), trace)


def non_finite_loss(value: float) -> ValueError:
    """The error for a loss that is NaN or Inf at params itself."""
    return NonFiniteLossError(
        f"fn: expected a finite loss at params, got fn(params, *args) = {value} before any "
        f"perturbation; finite differences need a loss that is finite at and near params "
        f"(look for log(0), 0/0, sqrt of a negative value or an overflow in fn)")


def require_finite_gradient(leaves: Sequence[Any], paths: Sequence[str], who: str,
                            loss_at_params: Callable[[], Any]) -> None:
    """Refuse a NaN or Inf entry in the gradient under test, naming its leaf and index.

    A non-finite loss at params explains a non-finite gradient, and is reported instead;
    the loss is evaluated (compiled) only then, so a valid input pays nothing for this.
    """
    finite, _ = finite_and_squares(leaves)
    for path, g, ok in zip(paths, leaves, finite):
        if not ok:
            g = to_host(g)
            value = to_host(loss_at_params())
            if value.shape == () and not np.isfinite(value):
                raise non_finite_loss(float(value))
            k = _first_nonfinite(g)
            raise NonFiniteGradientError(
                f"{who}: expected a finite gradient, got {g.reshape(-1)[k]} for component "
                f"{path}{_index(k, g.shape)} at params; a NaN or Inf gradient cannot be "
                f"compared (fn itself is finite there, so the gradient code produces it)")


def require_scalar_loss(out: Any) -> None:
    if not hasattr(out, "shape") or out.shape != () or not jnp.issubdtype(out.dtype, jnp.floating):
        got = (f"shape {tuple(out.shape)} dtype {out.dtype}" if hasattr(out, "shape")
               else type(out).__name__)
        raise ValueError(f"fn: expected fn(params, *args) to return a real scalar loss; got "
                         f"{got}. Reduce the loss to a scalar (e.g. jnp.mean).")
