"""Working precision: where the check runs in float64, and how precise `fn` really is.

Central differences in float32 reach a relative accuracy of only ~1e-5 at the best step, so
by default both `fn` and `grad_fn` are evaluated on float64 copies of the floating params and
args inside `jax.enable_x64(True)` (a scoped setting, never the global flag). Both run under
the same setting because some results depend on it (dropout masks drawn by
`jax.random.bernoulli` use the default float dtype).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _jaxpr
from .placement import is_distributed

# Leaves of this many entries or more are cast on their devices (see `cast_floating`).
DEVICE_CAST_MIN_SIZE = 1 << 20


@contextlib.contextmanager
def working_precision(precision: str) -> Iterator[Any | None]:
    """Yield the dtype floating inputs are cast to (float64), or None to keep them as given."""
    if precision == "native":
        yield None
        return
    if jax.default_backend() == "tpu":
        # TPUs have no float64 arithmetic; the CPU device always has it.
        cpu = jax.devices("cpu")[0]
        with jax.enable_x64(True), jax.default_device(cpu):
            yield jnp.float64
        return
    with jax.enable_x64(True):
        yield jnp.float64


def cast_floating(x: Any, dtype: Any | None) -> Any:
    """Cast a floating array to `dtype` (complex to its complex counterpart); others as they are."""
    if dtype is None or not hasattr(x, "dtype") or jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        return x
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        target = np.result_type(dtype, np.complex64)
    elif jnp.issubdtype(x.dtype, jnp.floating):
        target = np.dtype(dtype)
    else:
        return x
    if x.dtype == target:
        return jnp.asarray(x)
    if is_distributed(x) or np.size(x) >= DEVICE_CAST_MIN_SIZE:
        # On the devices, shard by shard: a sharded leaf is never gathered, and a large one
        # never copied through host memory.
        return jax.lax.convert_element_type(x, target)
    # Small leaves through NumPy: a device-side cast compiles one tiny program per shape.
    return jnp.asarray(np.asarray(x).astype(target))


def machine_epsilon(dtype: Any) -> float:
    return float(jnp.finfo(dtype).eps)


def var_epsilon(var: Any) -> float:
    """Machine epsilon of a jaxpr variable's dtype; 0 if it is not floating."""
    dtype = _jaxpr.var_dtype(var)
    if dtype is not None and jnp.issubdtype(dtype, jnp.inexact):
        return machine_epsilon(dtype)
    return 0.0


def equation_epsilon(eqn: Any) -> float:
    """The largest machine epsilon among an equation's outputs and the bodies it calls."""
    return max([0.0] + [var_epsilon(v) for v in eqn.outvars]
               + [lowest_float_eps(sub) for sub in _jaxpr.sub_jaxprs(eqn)])


def lowest_float_eps(jaxpr: Any) -> float:
    """The machine epsilon of the least precise floating value a jaxpr computes."""
    return max([0.0] + [equation_epsilon(eqn) for eqn in jaxpr.eqns])


def effective_epsilon(f: Any, *example: Any, default: float) -> float:
    """The machine epsilon of the least precise floating value `f` computes.

    A function that casts to float32 or bfloat16 inside computes in that precision even when
    its inputs are float64; its round-off (and so the step size and the tolerance) must be
    sized for that, or every component would be a false alarm.
    """
    try:
        closed = _jaxpr.trace(f, *example)
    except Exception:
        return default
    return jaxpr_epsilon(closed, default)


def jaxpr_epsilon(closed: Any, default: float) -> float:
    """`effective_epsilon` of a function already traced to `closed`."""
    return max(default, lowest_float_eps(closed.jaxpr))


def as_float64_numpy(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def native_dtype(x: Any) -> Any:
    """The dtype a leaf is checked in under `precision="native"`: its own, except that
    bfloat16 and float16 are upcast to float32 (differences on a 2⁻⁸ grid are noise)."""
    dtype = getattr(x, "dtype", None)
    if (dtype is not None and jnp.issubdtype(dtype, jnp.floating)
            and jnp.finfo(dtype).bits < 32):
        return jnp.float32
    return None
