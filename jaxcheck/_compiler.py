"""The XLA options jaxcheck compiles its own small programs with: never the user's programs,
never a flag set for the process.

A check compiles several programs (a batch program per leaf or group of leaves, fast mode's
joint test, the float64 gradient). Where their inputs are small (`SMALL_PROGRAM_BYTES`: the
params of the models people check by hand, a batch of points), each runs for milliseconds a
batch, and on XLA's CPU backend compiling them is most of a first call. Three options of XLA's
CPU compiler cut that:

- fusions emitted by XLA's classic LLVM IR emitters instead of its newer MLIR fusion emitters,
  and LLVM's optimisation level 1 instead of 2: full mode's programs on the benchmark's CNNs
  and transformer blocks took 0.34-0.54 of their compile time, run times 0.85-1.01
  (`bench/compile_options.py`, each model's programs summed);
- each program's code generated in one piece (`xla_cpu_parallel_codegen_split_count` 1, not
  split into pieces compiled on XLA's threads): the engine already compiles one program per
  core side by side, and the pieces cost CPU time the other compiles need (the d = 64 block's batch
  programs: 2.6-2.8 s of CPU against 3.6 s, for 0.15-0.35 s more wall time alone);
- a program a check runs once (`runs_once`: the gradient under test, the values at params and
  their transposes) at LLVM's level 0: the d = 64 block's three compiled in 0.35 s against
  1.5 s, and ran in 9 ms against 4 ms.

None enables fast math: the programs compute the same IEEE operations, though a fused
transcendental may round differently in its last bits, which every verdict's measured noise
covers. Programs with large inputs (a million parameters) compile in a fraction of their run
time, and there the default code was as quick or a few percent quicker: they keep XLA's
defaults, as do other backends, and a jaxlib whose XLA lacks these options (`options` tries
them once on a tiny program).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

CPU_OPTIONS: dict[str, Any] = {
    "xla_cpu_use_fusion_emitters": False,
    "xla_backend_optimization_level": 1,
    "xla_cpu_parallel_codegen_split_count": 1,
}
# A program that runs once per check (the gradient, the values at params) runs for
# milliseconds: at LLVM's level 0 it compiles in a quarter of the time and runs twice as long.
ONCE_CPU_OPTIONS: dict[str, Any] = {**CPU_OPTIONS, "xla_backend_optimization_level": 0}
SMALL_PROGRAM_BYTES = 4 * 2**20


def platform_of(arrays: Iterable[Any]) -> str:
    """The platform the first placed array of `arrays` lives on (a `jax.Array` or a
    `jax.ShapeDtypeStruct` with a sharding); else the default device's."""
    for x in arrays:
        sharding = getattr(x, "sharding", None)
        if sharding is not None:
            return next(iter(sharding.device_set)).platform
    device = jax.config.jax_default_device  # pyright: ignore[reportAttributeAccessIssue]
    if device is None:
        return jax.default_backend()
    return device if isinstance(device, str) else device.platform


def nbytes(arrays: Iterable[Any]) -> int:
    """Bytes of the arrays (or shape-and-dtype structures) among `arrays`."""
    return sum(int(np.prod(x.shape, dtype=np.int64)) * _itemsize(x.dtype)
               for x in arrays if hasattr(x, "shape") and hasattr(x, "dtype"))


def _itemsize(dtype: Any) -> int:
    try:
        return np.dtype(dtype).itemsize
    except TypeError:  # JAX's extended dtypes (PRNG keys) are not NumPy's
        return int(getattr(dtype, "itemsize", 8) or 8)


def options(platform: str, input_bytes: int, once: bool = False) -> dict[str, Any] | None:
    """The compiler options of a jaxcheck program on `platform` whose inputs take
    `input_bytes` (None: XLA's defaults); `once`: it runs once per check, not per batch."""
    if platform != "cpu" or input_bytes > SMALL_PROGRAM_BYTES or not _cpu_options_supported():
        return None
    return dict(ONCE_CPU_OPTIONS if once else CPU_OPTIONS)


@functools.cache
def _cpu_options_supported() -> bool:
    try:
        cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
        spec = jax.ShapeDtypeStruct((2,), jnp.float32, sharding=cpu)
        jax.jit(jnp.sin).lower(spec).compile(dict(CPU_OPTIONS))
    except Exception:  # an XLA without these options: its defaults
        return False
    return True


def compile_lowered(lowered: Any, platform: str, once: bool = False) -> Any:
    """`lowered.compile()`, with jaxcheck's options for `platform`, its inputs' size and how
    often it runs (`options`)."""
    size = nbytes(jax.tree_util.tree_leaves(lowered.args_info))
    return lowered.compile(options(platform, size, once))


def runs_once(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark `fn` as a program a check runs once (see `ONCE_CPU_OPTIONS`); returns `fn`."""
    fn.runs_once = True  # type: ignore[attr-defined]
    return fn


def is_run_once(fn: Callable[..., Any]) -> bool:
    return bool(getattr(fn, "runs_once", False))


def jit(fn: Callable[..., Any], static_argnums: tuple[int, ...] = ()) -> Jitted:
    """`jax.jit(fn, static_argnums=...)` compiled with jaxcheck's options for the platform
    and size of its arguments, and for how often `fn` runs (`runs_once`)."""
    return Jitted(fn, static_argnums)


class Jitted:
    """A jitted function per choice of options (`jit`), each with its own cache of compiled
    programs; called, or lowered, like `jax.jit`'s."""

    def __init__(self, fn: Callable[..., Any], static_argnums: tuple[int, ...]):
        self.fn, self.static_argnums = fn, static_argnums
        self._by_options: dict[tuple, Any] = {}
        functools.update_wrapper(self, fn)

    def _jitted(self, args: tuple) -> Any:
        arrays = jax.tree_util.tree_leaves(
            [a for k, a in enumerate(args) if k not in self.static_argnums])
        chosen = options(platform_of(arrays), nbytes(arrays), is_run_once(self.fn))
        key = tuple(sorted(chosen.items())) if chosen else ()
        jitted = self._by_options.get(key)
        if jitted is None:
            jitted = self._by_options[key] = jax.jit(
                self.fn, static_argnums=self.static_argnums, compiler_options=chosen)
        return jitted

    def __call__(self, *args: Any) -> Any:
        return self._jitted(args)(*args)

    def lower(self, *args: Any) -> Any:
        return self._jitted(args).lower(*args)
