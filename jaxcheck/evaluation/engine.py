"""Batched evaluation of the loss at perturbed points.

One leaf is perturbed at a time, so everything computed before the leaf's first use does not
depend on the batch axis and `vmap` leaves it unbatched. Each perturbation is built from its
(index, value) pair inside the mapped function: no (m, n) matrix of perturbed parameter
vectors is materialised. When the params have `LOCAL_CHANGES_MIN_SIZE` entries or more, the
change of one entry is followed through the loss (`_local_changes`: a weight entry changes one
column of a product, not the whole product); otherwise the leaf is copied with the entry
replaced by an elementwise select.

Batches have a fixed size, so one compiled program serves every batch of a leaf. The size is
an upper bound from the leaf's size, lowered until XLA's compiled memory analysis of the
program fits `memory_budget()` (so a 1e6-parameter leaf cannot exhaust memory). Batches are
split over all local devices with `jax.shard_map` (`_devices`).

Compiled programs are kept in a small LRU cache (`CACHE_SIZE` entries) keyed by the
`Problem` (fn and the hashable skeletons of params and args), the leaf, the requested batch
size, the shapes and dtypes of the dynamic leaves, the devices and the x64 setting: a second
check of the same function with the same shapes compiles nothing.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import threading
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..inputs.problem import Problem
from . import devices as mesh_devices
from . import local_changes, progress

# Larger batches stop paying on CPU once a batch's perturbed copies leave the caches; an
# accelerator needs large batches to fill its cores.
MAX_BATCH_CPU = 64
# A change followed through the loss (`_local_changes`) costs little per perturbation and
# needs no copy of the leaf: larger batches amortise the cost of each call.
MAX_BATCH_CPU_LOCAL = 256
MAX_BATCH_ACCELERATOR = 1024
# Bytes of perturbed-leaf copies allowed per batch by the first guess (before compiling).
BATCH_MEMORY_BUDGET = 256 * 2**20
CACHE_SIZE = 64
# Params of this many entries or more are evaluated by following each change
# (`_local_changes`): its program takes ~1.5x as long to compile, which a few thousand cheap
# evaluations do not repay. The params' size, not the leaf's: a bias is as expensive to
# perturb as the products downstream of it.
LOCAL_CHANGES_MIN_SIZE = 2048


def choose_batch_size(leaf_size: int, itemsize: int, n_points: int,
                      requested: Optional[int] = None, local: bool = False) -> int:
    """First guess of the batch size, never more than needed for `n_points`.

    `evaluate` lowers it further if the compiled program's temporaries exceed the memory
    budget; a `requested` size is used as given (and lowered the same way).
    """
    if requested is not None:
        return requested
    if jax.default_backend() != "cpu":
        cap = MAX_BATCH_ACCELERATOR
    else:
        cap = MAX_BATCH_CPU_LOCAL if local else MAX_BATCH_CPU
    # a followed change (`local`) copies no leaf: the compiled memory analysis alone bounds it
    by_memory = cap if local else max(1, BATCH_MEMORY_BUDGET // max(1, 4 * leaf_size * itemsize))
    needed = 1 << max(0, int(np.ceil(np.log2(max(1, n_points)))))
    return int(min(cap, by_memory, needed))


def leaf_batch_size(param_dynamic: Sequence[Any], position: int, n_points: int,
                    requested: Optional[int] = None) -> int:
    """`choose_batch_size` for perturbations of leaf `position` of these params."""
    leaf = param_dynamic[position]
    return choose_batch_size(int(leaf.size), np.dtype(leaf.dtype).itemsize, n_points, requested,
                             local=follows_local_changes(param_dynamic))


def memory_budget(device: Any) -> int:
    """Bytes of temporaries one batch may use on `device`.

    Accelerators: half of the memory not in use. CPU: 1/16 of physical memory, at most
    1 GiB (leaves room for the process, the caller's arrays and XLA's own buffers).
    """
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - not every backend reports memory
        pass
    if stats and "bytes_limit" in stats:
        return int(0.5 * (stats["bytes_limit"] - stats.get("bytes_in_use", 0)))
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = 8 * 2**30
    return int(min(2**30, physical // 16))


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """A compiled batch program for one leaf, and where its inputs go."""

    compiled: Any
    batch: int
    mesh: Any                  # None on a single device
    temp_bytes: int

    def place_shared(self, tree: Any) -> Any:
        if self.mesh is None:
            return tree
        return jax.device_put(tree, mesh_devices.replicated(self.mesh))

    def place_batch(self, x: np.ndarray) -> Any:
        if self.mesh is None:
            return x
        return jax.device_put(x, mesh_devices.split_over(self.mesh))


_plans: "collections.OrderedDict[Any, Plan]" = collections.OrderedDict()
_compilations = 0
_lock = threading.Lock()  # `compile_ahead` compiles in threads


def compilations() -> int:
    """How many batch programs this process has compiled (for tests and benchmarks)."""
    return _compilations


def clear_cache() -> None:
    """Drop every cached compiled program (they hold references to the checked `fn`)."""
    _plans.clear()


def _signature(tree: Sequence[Any]) -> tuple:
    return tuple((tuple(np.shape(x)), str(x.dtype), bool(getattr(x, "weak_type", False)))
                 for x in tree)


def _batch_function(problem: Problem, position: int,
                    traced: Optional[local_changes.Traced]) -> Callable[..., Any]:
    def batch(param_dynamic, arg_dynamic, indices, values):
        def one(i, v):
            if traced is not None:  # the change followed through the loss (`_local_changes`)
                return traced.at_entry(param_dynamic, arg_dynamic, i, v)
            base = param_dynamic[position]
            flat = base.reshape(-1)
            dynamic = list(param_dynamic)
            dynamic[position] = jnp.where(jax.lax.iota(np.int32, flat.size) == i, v,
                                          flat).reshape(base.shape)
            return problem.loss(dynamic, arg_dynamic)

        return jax.vmap(one)(indices, values)

    return batch


def follows_local_changes(param_dynamic: Sequence[Any]) -> bool:
    """Whether perturbations of these params are evaluated by `_local_changes`."""
    size = sum(int(np.prod(np.shape(x), dtype=np.int64)) for x in param_dynamic)
    return size >= LOCAL_CHANGES_MIN_SIZE


def traced_loss(problem: Problem, position: int, param_dynamic: Sequence[Any],
                arg_dynamic: Sequence[Any]) -> Optional[local_changes.Traced]:
    """The loss traced for `_local_changes`, or None where perturbations are evaluated
    directly (small params, or a loss that does not trace)."""
    if not follows_local_changes(param_dynamic):
        return None
    return local_changes.trace(problem.loss, position, param_dynamic, arg_dynamic)


def _compile(problem: Problem, position: int, param_dynamic, arg_dynamic, batch: int,
             devices: tuple[Any, ...]) -> Plan:
    traced = traced_loss(problem, position, param_dynamic, arg_dynamic)
    if traced is not None:
        try:
            return _compile_with(problem, position, param_dynamic, arg_dynamic, batch, devices,
                                 traced)
        except Exception:  # noqa: BLE001 - an op the interpreter cannot replay: run directly
            pass
    return _compile_with(problem, position, param_dynamic, arg_dynamic, batch, devices, None)


def _compile_with(problem: Problem, position: int, param_dynamic, arg_dynamic, batch: int,
                  devices: tuple[Any, ...], traced: Optional[local_changes.Traced]) -> Plan:
    global _compilations
    leaf = param_dynamic[position]
    f = _batch_function(problem, position, traced)
    spec_i = jax.ShapeDtypeStruct((batch,), np.int32)
    spec_v = jax.ShapeDtypeStruct((batch,), leaf.dtype)
    if len(devices) > 1:
        mesh = mesh_devices.mesh_of(devices)
        shared, split = mesh_devices.replicated(mesh), mesh_devices.split_over(mesh)
        jitted = jax.jit(mesh_devices.shard_batch(f, mesh),
                         in_shardings=(shared, shared, split, split), out_shardings=split)
    else:
        mesh, jitted = None, jax.jit(f)
    compiled = jitted.lower(tuple(param_dynamic), tuple(arg_dynamic), spec_i, spec_v).compile()
    with _lock:
        _compilations += 1
    try:
        temp = int(compiled.memory_analysis().temp_size_in_bytes)
    except Exception:  # noqa: BLE001 - no analysis: assume one leaf copy per perturbation
        temp = batch * leaf.size * leaf.dtype.itemsize
    return Plan(compiled, batch, mesh, temp)


def plan(problem: Problem, position: int, param_dynamic: Sequence[Any],
         arg_dynamic: Sequence[Any], batch_size: int) -> Plan:
    """The compiled program for batches of at most `batch_size` perturbations of a leaf."""
    param_dynamic, arg_dynamic = tuple(param_dynamic), tuple(arg_dynamic)
    devices = mesh_devices.devices_for(param_dynamic)
    key = _key(problem, position, param_dynamic, arg_dynamic, batch_size, devices)
    with _lock:
        found = _plans.get(key)
        if found is not None:
            _plans.move_to_end(key)
            return found
    # Per device: each one holds the temporaries of its own slice of the batch.
    budget = memory_budget(devices[0]) * len(devices)
    batch = mesh_devices.round_to_devices(batch_size, len(devices))
    p = _compile(problem, position, param_dynamic, arg_dynamic, batch, devices)
    while p.temp_bytes > budget and batch > len(devices):
        batch = mesh_devices.round_to_devices(batch // 2, len(devices))
        p = _compile(problem, position, param_dynamic, arg_dynamic, batch, devices)
    with _lock:
        _plans[key] = p
        while len(_plans) > CACHE_SIZE:
            _plans.popitem(last=False)
    return p


def _key(problem, position, param_dynamic, arg_dynamic, batch_size, devices) -> tuple:
    return (problem, position, batch_size, _signature(param_dynamic), _signature(arg_dynamic),
            devices, jax.dtypes.canonicalize_dtype(np.float64) == np.float64)


def compile_ahead(requests: Sequence[tuple[Problem, int, Sequence[Any], Sequence[Any], int]]) -> None:
    """Compile the programs of several leaves at once, one thread per core.

    Each request is `(problem, position, param_dynamic, arg_dynamic, batch_size)` as given to
    `plan`. XLA compiles outside the GIL, so on a first check the leaves' programs compile
    side by side instead of one after another; later `plan` calls find them cached.
    """
    missing = [r for r in requests
               if _key(*r[:4], r[4], mesh_devices.devices_for(r[2])) not in _plans]
    workers = min(len(missing), os.cpu_count() or 1)
    if workers < 2:
        return
    # x64 and the default device are thread-local settings: carry them into the workers.
    x64 = bool(jax.config.jax_enable_x64)
    device = jax.config.jax_default_device

    def work(request):
        with jax.enable_x64(x64), jax.default_device(device):
            plan(*request)

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(work, r) for r in missing]:
            future.result()


def evaluate(problem: Problem, position: int, param_dynamic: Sequence[Any],
             arg_dynamic: Sequence[Any], indices: np.ndarray, values: np.ndarray,
             batch_size: int) -> np.ndarray:
    """Loss values (float64) with component `indices[k]` of leaf `position` set to `values[k]`.

    `batch_size` is an upper bound: the memory budget may lower it; results do not depend on it.
    """
    m = len(indices)
    if m == 0:
        return np.zeros(0)
    leaf = param_dynamic[position]
    p = plan(problem, position, param_dynamic, arg_dynamic, batch_size)
    b = p.batch
    pad = (-m) % b
    # Padding entries evaluate the unperturbed point; their results are dropped.
    indices = np.concatenate([np.asarray(indices), np.zeros(pad, np.int64)]).astype(np.int32)
    first = np.asarray(leaf).reshape(-1)[:1]
    values = np.concatenate([np.asarray(values), np.repeat(first, pad)]).astype(leaf.dtype)
    shared_p, shared_a = p.place_shared(tuple(param_dynamic)), p.place_shared(tuple(arg_dynamic))
    track = progress.active()
    outs, reported = [], 0
    for k, s in enumerate(range(0, m + pad, b)):
        # Dispatched asynchronously; with a progress bar, finished batches are counted two
        # behind the one just dispatched so the device never waits for the host.
        outs.append(p.compiled(shared_p, shared_a, p.place_batch(indices[s:s + b]),
                               p.place_batch(values[s:s + b])))
        if track and k >= 2:
            outs[k - 2].block_until_ready()
            done = min(m, (k - 1) * b)
            progress.advance(done - reported)
            reported = done
    result = np.concatenate([np.asarray(o, dtype=np.float64).reshape(-1) for o in outs])[:m]
    if track:
        progress.advance(m - reported)
    return result


def seconds_per_evaluation(problem: Problem, position: int, param_dynamic: Sequence[Any],
                           arg_dynamic: Sequence[Any], n_points: int,
                           requested: Optional[int] = None) -> float:
    """Seconds per perturbed evaluation of a leaf, from timing one batch (compiled first)."""
    leaf = param_dynamic[position]
    batch = leaf_batch_size(param_dynamic, position, n_points, requested)
    p = plan(problem, position, param_dynamic, arg_dynamic, batch)
    shared_p, shared_a = p.place_shared(tuple(param_dynamic)), p.place_shared(tuple(arg_dynamic))
    indices = p.place_batch(np.zeros(p.batch, np.int32))
    values = p.place_batch(np.repeat(np.asarray(leaf).reshape(-1)[:1], p.batch))
    # One run: its allocations make it slightly slower than the next (a cautious estimate).
    start = time.perf_counter()
    p.compiled(shared_p, shared_a, indices, values).block_until_ready()
    return (time.perf_counter() - start) / p.batch


def jobs_for(tasks: Sequence[Any]) -> list[progress.Job]:
    """One `Job` per leaf task of a full check (2n+1 evaluations in its first pass); the
    leaves' programs are compiled here, side by side."""
    compile_ahead([(t.problem, t.position, t.param_dynamic, t.arg_dynamic,
              leaf_batch_size(t.param_dynamic, t.position, 2 * int(t.leaf.size) + 1,
                              t.batch_size)) for t in tasks])
    jobs = []
    for t in tasks:
        points = 2 * int(t.leaf.size) + 1
        jobs.append(progress.Job(points, lambda t=t, points=points: seconds_per_evaluation(
            t.problem, t.position, t.param_dynamic, t.arg_dynamic, points, t.batch_size)))
    return jobs
