"""Working precision: where the check runs in float64, and how precise `fn` really is.

Central differences in float32 reach a relative accuracy of only ~1e-5 at the best step, so
where float64 is fast (`resolve_precision`: CPUs and data-centre GPUs) both `fn` and `grad_fn`
are evaluated on float64 copies of the floating params and args inside `jax.enable_x64(True)`
(a scoped setting, never the global flag). Both run under the same setting because some
results depend on it (dropout masks drawn by `jax.random.bernoulli` use the default float
dtype). Elsewhere (TPUs, consumer and inference GPUs) `precision="auto"` checks in the
inputs' own dtypes, with the error model of that precision.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _jaxpr
from .placement import is_distributed, to_device

# Leaves of this many entries or more are cast on their devices (see `cast_floating`).
DEVICE_CAST_MIN_SIZE = 1 << 20

# GPUs whose float64 rate is at least 1/4 of their float32 rate (peak FLOP/s, vendor data
# sheets): NVIDIA P100, V100, A100, A30, A800, H100, H800, H200, GH200, B100, B200, GB200
# run float64 at 1/2 of float32 (A100: 9.7 vs 19.5 TFLOP/s; H100 SXM: 34 vs 67); AMD Instinct
# MI100 at 1/2, MI200 (MI210, MI250, MI250X) at 1/1, MI300 (MI300A/X, MI325X) at 1/2, MI350
# at 1/2 (ROCm may report the gfx target instead: gfx908, gfx90a, gfx94x, gfx950). Consumer
# and inference parts run it at 1/32 to 1/64 (GeForce/RTX, Tesla T4, L4, L40, A10, A40,
# B300, H20): a float64 check there would be slower than a float32 one by that factor.
FAST_FLOAT64_GPUS = (
    "P100", "V100", "A100", "A30", "A800", "H100", "H800", "H200", "GH200",
    "B100", "B200", "GB200",
    "MI100", "MI200", "MI210", "MI250", "MI300", "MI325", "MI350", "MI355",
    "GFX908", "GFX90A", "GFX940", "GFX941", "GFX942", "GFX950",
)
GPU_PLATFORMS = ("gpu", "cuda", "rocm")


def resolve_precision(precision: str, platform: str, device_kind: str) -> str:
    """The working precision `precision` stands for on a device: `"float64"` or `"native"`.

    `"float64"` and `"native"` stand for themselves. `"auto"` is `"float64"` where the device
    runs float64 natively and fast: the CPU, and a GPU whose `device_kind` names one of
    `FAST_FLOAT64_GPUS` (`"NVIDIA H100 80GB HBM3"`, `"AMD Instinct MI250X"`); `"native"`
    everywhere else (TPUs have no float64 matrix products; consumer GPUs run float64 at
    1/32 to 1/64 of the float32 rate).

    **Arguments:**

    - `precision`: `"auto"`, `"float64"` or `"native"`.
    - `platform`: the device's platform, as `jax.Device.platform` (`"cpu"`, `"gpu"`, `"tpu"`).
    - `device_kind`: as `jax.Device.device_kind` (`"cpu"`, `"NVIDIA A100-SXM4-40GB"`, `"TPU v4"`).
    """
    if precision != "auto":
        return precision
    platform = platform.casefold()
    if platform == "cpu":
        return "float64"
    if platform in GPU_PLATFORMS and _names_fast_float64_gpu(device_kind):
        return "float64"
    return "native"


def _names_fast_float64_gpu(device_kind: str) -> bool:
    """Does a word of `device_kind` name a table entry, or one with a one-letter suffix
    (V100S, MI250X, MI300A)? Whole words only: "H20" is not "H200", nor "A10" "A100"."""
    words = re.split(r"[^0-9A-Z]+", device_kind.upper())
    return any(w == kind or (w[:-1] == kind and w[-1].isalpha())
               for w in words if w for kind in FAST_FLOAT64_GPUS)


def device_of(tree: Any) -> Any:
    """The device the first `jax.Array` leaf of `tree` lives on, else JAX's default device."""
    for leaf in jax.tree_util.tree_leaves(tree):
        if isinstance(leaf, jax.Array):
            try:
                return min(leaf.devices(), key=lambda dev: dev.id)
            except Exception:  # a tracer or a deleted array: no devices to ask
                continue
    return jax.devices()[0]


@dataclasses.dataclass(frozen=True)
class PrecisionChoice:
    """The precision asked for (`"auto"`, `"float64"`, `"native"`) and the one used."""

    requested: str
    used: str

    def info(self) -> dict[str, str]:
        """The `report.info` entries: `precision` (used) and `precision_requested`."""
        return {"precision": self.used, "precision_requested": self.requested}


def choose_precision(precision: str, params: Any) -> PrecisionChoice:
    """`resolve_precision` for the device `params` live on (`device_of`)."""
    device = device_of(params)
    return PrecisionChoice(precision,
                           resolve_precision(precision, device.platform, device.device_kind))


@contextlib.contextmanager
def working_precision(precision: str) -> Iterator[Any | None]:
    """Yield the dtype floating inputs are cast to (float64), or None to keep them as given.

    `precision` is a resolved one (`"float64"` or `"native"`, see `resolve_precision`)."""
    assert precision in ("float64", "native"), f"resolve {precision!r} first"
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
        return to_device(x)
    if is_distributed(x) or np.size(x) >= DEVICE_CAST_MIN_SIZE:
        # On the devices, shard by shard: a sharded leaf is never gathered, and a large one
        # never copied through host memory.
        return jax.lax.convert_element_type(x, target)
    # Small leaves through NumPy: a device-side cast compiles one tiny program per shape.
    return to_device(np.asarray(x).astype(target))


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
