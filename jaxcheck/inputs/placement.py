"""Where the arrays live: sharded params checked in place, results brought to the host.

Params that are `jax.Array`s sharded over a `Mesh` (FSDP, tensor parallelism), possibly over
several processes under `jax.distributed`, stay where they are: working copies are cast on
the devices, shard by shard (`precision.cast_floating`); every other dynamic input is
replicated over the same mesh, so that one compiled program takes them all; the evaluations
run under the params' own shardings (`evaluation/engine` puts the perturbation batch along the
mesh axes the params do not use). Only what a verdict needs comes back: `to_host` gathers an
array for the host, on every process alike.

One process and one device (the usual case) involve none of this: `mesh_of` is None and
`to_host` is `np.asarray`.
"""
from __future__ import annotations

import contextlib
import contextvars
import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec


def is_distributed(x: Any) -> bool:
    """Whether `x` is a jax.Array placed on more than one device (sharded or replicated)."""
    return isinstance(x, jax.Array) and len(x.sharding.device_set) > 1


def mesh_of(leaves: Iterable[Any]) -> Mesh | None:
    """The mesh of the first leaf placed on several devices by a `NamedSharding`, or None.

    Every other leaf placed on several devices must use the same mesh: a check runs one
    program per evaluation, and one program has one mesh.
    """
    found: Mesh | None = None
    for x in leaves:
        if not is_distributed(x):
            continue
        sharding = x.sharding
        if not isinstance(sharding, NamedSharding):
            raise ValueError(
                f"params/args: arrays placed on several devices must use a "
                f"jax.sharding.NamedSharding over a Mesh; got {type(sharding).__name__}. "
                f"Place them with jax.device_put(x, NamedSharding(mesh, PartitionSpec(...))).")
        mesh = sharding.mesh
        if not isinstance(mesh, Mesh):
            raise ValueError("params/args: expected a NamedSharding over a concrete jax "
                             f"Mesh; got {type(mesh).__name__}")
        if found is None:
            found = mesh
        elif mesh != found:
            raise ValueError(
                f"params/args: every sharded array must use the same Mesh; got meshes "
                f"{dict(found.shape)} and {dict(mesh.shape)}")
    return found


def sharded_in_types(x: Any) -> bool:
    """Whether `x` is placed over a mesh with `Explicit` axes (JAX's default for
    `jax.make_mesh`): its sharding is part of its type, which every jaxcheck program keeps."""
    mesh = getattr(x.sharding, "mesh", None)
    return any(t == AxisType.Explicit for t in getattr(mesh, "axis_types", ()))


def used_axes(leaves: Iterable[Any]) -> set[str]:
    """The mesh axes that some leaf's PartitionSpec shards along."""
    used: set[str] = set()
    for x in leaves:
        if is_distributed(x) and isinstance(x.sharding, NamedSharding):
            used |= _axes_of(x.sharding.spec)
    return used


def _axes_of(spec: PartitionSpec) -> set[str]:
    axes: set[str] = set()
    for entry in spec:
        if entry is not None:
            axes.update((entry,) if isinstance(entry, str) else tuple(entry))
    return axes


def free_axes(mesh: Mesh, leaves: Sequence[Any]) -> tuple[str, ...]:
    """The mesh axes (of size > 1) no leaf is sharded along: a batch of perturbations goes
    along them. Empty when the model uses every axis: the batch is then evaluated by all
    devices together, one batch after another."""
    used = used_axes(leaves)
    return tuple(a for a in mesh.axis_names if a not in used and mesh.shape[a] > 1)


def describe(paths: Sequence[str], leaves: Sequence[Any]) -> dict[str, Any]:
    """What a report says about where the checked leaves were: the mesh and which leaves were
    sharded over it (checked in place, never gathered), and the number of processes."""
    mesh = mesh_of(leaves)
    if mesh is None:
        return {}
    sharded = [p for p, x in zip(paths, leaves)
               if is_distributed(x) and not x.sharding.is_fully_replicated]
    return {"mesh": {str(k): int(v) for k, v in mesh.shape.items()}, "sharded": sharded,
            "processes": jax.process_count()}


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


# The mesh of Auto axes whose programs are being traced (`programs_over`), or None.
_tracing_over: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar("tracing_over",
                                                                           default=None)


@contextlib.contextmanager
def programs_over(leaves: Sequence[Any]) -> Iterator[None]:
    """While programs over inputs like these (arrays, or `jax.ShapeDtypeStruct`s with their
    shardings: a program compiled ahead) are traced: where they are placed over a mesh of
    `Auto` axes, the other inputs, replicated there, are left for XLA to place
    (`placed_by_xla`). Under `Explicit` axes the shardings are in the types; unsharded
    inputs need nothing."""
    placed = [x for x in leaves if isinstance(getattr(x, "sharding", None), NamedSharding)
              and len(x.sharding.device_set) > 1]
    mesh = None
    if placed and not any(sharded_in_types(x) for x in placed) and isinstance(
            placed[0].sharding.mesh, Mesh):
        mesh = placed[0].sharding.mesh
    token = _tracing_over.set(mesh)
    try:
        yield
    finally:
        _tracing_over.reset(token)


def placed_by_xla(args: Sequence[Any]) -> Sequence[Any]:
    """The args (replicated over the params' mesh), free to take whatever sharding XLA's
    partitioner picks, as in the model's own program, where an input on one device leaves it
    free: held replicated, a batch of activations next to row-split weights makes XLA reshard
    the weights instead (an all-to-all holding three copies of a weight's shard). Slicing a
    replicated array costs nothing."""
    mesh = _tracing_over.get()
    if mesh is None:
        return args
    return [jax.lax.with_sharding_constraint(
                a, NamedSharding(mesh, PartitionSpec(*[PartitionSpec.UNCONSTRAINED] * a.ndim)))
            if isinstance(a, jax.core.Tracer) and a.ndim else a for a in args]


def from_host(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A host array, the same on every process, as a global array with `sharding` (each
    process places only its own devices' parts)."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def onto_mesh(x: Any, mesh: Mesh) -> Any:
    """`x` as an input of the mesh's programs: kept if placed on several devices already,
    else replicated over the mesh (it is the same on every process)."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype") or is_distributed(x):
        return x
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.device_put(x, replicated(mesh))
    return from_host(np.asarray(x), replicated(mesh))


def to_host(x: Any) -> np.ndarray:
    """`x` as a host array, on every process: the local copy of a replicated array, else the
    array gathered over the processes (only for what a report needs: a few scalars, the
    components it names, a leaf's gradient in full mode)."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    return np.asarray(_replicate(x).addressable_data(0))


def to_device(x: Any, dtype: Any = None) -> Any:
    """`jnp.asarray(x, dtype)` that compiles nothing for a host value: a NumPy array or scalar
    is converted on the host and transferred (`jnp.asarray` of one compiles a program per
    shape and dtype); a device array is converted where it is, only if its dtype differs."""
    if isinstance(x, jax.Array):
        return x if dtype is None or x.dtype == dtype else x.astype(dtype)
    return jax.device_put(np.asarray(x, dtype))


def flatten(x: Any, donate: bool = False) -> Any:
    """`x.reshape(-1)`; a sharded `x` gives a flat array split over the same mesh axes (a
    plain reshape of a leaf split along its columns would be replicated: a copy per device).
    An array on one CPU device is reshaped by NumPy: no program per shape. With `donate`
    (an array nothing else holds), a sharded `x`'s buffers become the flat array's where
    XLA can reuse them: no second copy of a leaf-sized array, even for a moment."""
    if _on_host(x):
        if isinstance(x, jax.Array) and x.ndim == 1:
            return x
        return to_device(np.asarray(x).reshape(-1))
    if not is_distributed(x) or x.sharding.is_fully_replicated:
        return jnp.reshape(x, -1)
    mesh = x.sharding.mesh
    axes = tuple(a for a in mesh.axis_names if a in used_axes([x]))
    parts = int(np.prod([mesh.shape[a] for a in axes], dtype=np.int64))
    sharding = NamedSharding(mesh, along(axes if x.size % parts == 0 else ()))
    if x.ndim == 1 and x.sharding.is_equivalent_to(sharding, 1):
        return x
    return _flattener(sharding, donate)(x)


def along(axes: Sequence[str]) -> PartitionSpec:
    """The spec splitting a first dimension over `axes` (none: replicated)."""
    if not axes:
        return PartitionSpec()
    return PartitionSpec(tuple(axes) if len(axes) > 1 else axes[0])


@functools.lru_cache(maxsize=16)
def _flattener(sharding: NamedSharding, donate: bool) -> Any:
    return jax.jit(flat, out_shardings=sharding, donate_argnums=(0,) if donate else ())


def _explicit(x: Any) -> Any:
    """The sharding in `x`'s type where its mesh has `Explicit` axes, else None."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    if any(t == AxisType.Explicit for t in getattr(mesh, "axis_types", ())):
        return sharding
    return None


def flat(x: Any) -> Any:
    """`x.reshape(-1)` that also traces under `Explicit` mesh axes (JAX's default), where a
    reshape that moves data must name its output sharding: split over the axes `x` uses."""
    sharding = _explicit(x)
    if sharding is None:
        return x.reshape(-1)
    axes = tuple(a for a in sharding.mesh.axis_names if a in _axes_of(sharding.spec))
    parts = int(np.prod([sharding.mesh.shape[a] for a in axes], dtype=np.int64))
    return jax.lax.reshape(x, (x.size,), out_sharding=along(axes if x.size % parts == 0
                                                           else ()))


def shaped_like(x: Any, like: Any) -> Any:
    """The flat `x` in the shape of `like`, with `like`'s sharding under `Explicit` axes."""
    sharding = _explicit(like)
    if sharding is None:
        return x.reshape(like.shape)
    return jax.lax.reshape(x, like.shape, out_sharding=sharding.spec)


def entries(x: Any, indices: np.ndarray) -> np.ndarray:
    """The entries `indices` of `x` flattened (row-major), on the host: the few a report
    names, read where they live (the rest of a sharded `x` is never gathered)."""
    indices = np.asarray(indices)
    if indices.size == 0:
        return np.zeros(0, np.dtype(x.dtype))
    if _on_host(x):   # read by NumPy: a gather compiles programs per shape
        return np.asarray(x).reshape(-1)[indices]
    if np.ndim(x) != 1:
        x = flat(x)
    if is_distributed(x) and sharded_in_types(x):  # the gather's own sharding must be named
        mesh = x.sharding.mesh
        return to_host(x.at[indices].get(out_sharding=NamedSharding(mesh, PartitionSpec())))
    return to_host(x[indices])


# Entries up to which `finite_and_squares` reduces CPU arrays with NumPy.
NUMPY_MAX_ENTRIES = 1 << 17


@jax.jit
def _finite_and_squares(xs: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    return ([jnp.all(jnp.isfinite(x)) for x in xs],
            [jnp.sum(x * x, dtype=jnp.promote_types(x.dtype, jnp.float32)) for x in xs])


def finite_and_squares(xs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per array of `xs` (real floating): whether every entry is finite, and the sum of its
    squares (float64 on the host). One compiled program for all of them, reduced where they
    live; the params and their gradient share it (the same shapes), where a check of each
    array op by op compiled two programs per shape."""
    # NumPy on small CPU arrays: nothing to compile (large ones: the program's runs are faster)
    if all(_on_host(x) for x in xs) and sum(np.size(x) for x in xs) <= NUMPY_MAX_ENTRIES:
        arrays = [np.asarray(x) for x in xs]
        wide = [a.astype(np.promote_types(a.dtype, np.float32), copy=False).reshape(-1)
                for a in arrays]
        return (np.asarray([bool(np.isfinite(a).all()) for a in arrays], bool),
                np.asarray([float(np.vdot(w, w).real) for w in wide], np.float64))
    if any(is_distributed(x) for x in xs):
        # one program per array, reduced where it lives (their meshes may differ), fused: a
        # leaf-sized temporary (its squares, op by op) is no small thing beside a model that
        # fills its devices
        parts = [_finite_and_squares((x,)) for x in xs]
        return (np.asarray([bool(to_host(f[0])) for f, _ in parts], bool),
                np.asarray([float(to_host(q[0])) for _, q in parts], np.float64))
    flags, squares = jax.device_get(_finite_and_squares(tuple(jnp.asarray(x) for x in xs)))
    return np.asarray(flags, bool).reshape(-1), np.asarray(squares, np.float64).reshape(-1)


def _on_host(x: Any) -> bool:
    """Whether `x` is a NumPy array or a jax.Array on one CPU device."""
    if not isinstance(x, jax.Array):
        return True
    devices = x.sharding.device_set
    return len(devices) == 1 and next(iter(devices)).platform == "cpu"


def _replicate(x: jax.Array) -> jax.Array:
    sharding = x.sharding
    assert isinstance(sharding, NamedSharding)  # `mesh_of` admits no other
    return _replicator(sharding.mesh)(x)


@functools.lru_cache(maxsize=8)
def _replicator(mesh: Mesh) -> Any:
    return jax.jit(_identity, out_shardings=replicated(mesh))


def _identity(x: Any) -> Any:
    return x


def release_freed_memory(arrays: Iterable[Any]) -> None:
    """Free what nothing uses any more before a large allocation: arrays caught in reference
    cycles (Python's cycle collector runs by object counts, not bytes, so a leaf-sized buffer
    held by one could outlive its leaf by several leaves), and, where `arrays` live in host
    memory (CPU devices), the C heap's free pages, returned to the OS (glibc's
    `malloc_trim`; without glibc, nothing).

    XLA's CPU buffers below glibc's mmap threshold (up to 32 MiB: the per-device slices of a
    sharded model of 10⁸ parameters) come from the C heap, which keeps them once freed; a
    check that computes one large leaf after another would see the process's resident set
    grow by what it freed (measured: 0.5–0.9× the params' float64 size at 10⁸ parameters,
    `bench/large_model.py`). Nothing live is touched."""
    gc.collect()
    if not any(isinstance(x, jax.Array) and x.sharding.device_set
               and next(iter(x.sharding.device_set)).platform == "cpu" for x in arrays):
        return
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):   # not glibc (macOS, musl)
        return None
