"""The one engine: every batched evaluation of jaxcheck is compiled and run here.

A caller describes what one point computes as a `Kernel` (a frozen dataclass, so hashable):
`EntryLoss` (the loss with one entry of a leaf moved: full and sample mode, fast mode's
localisation), and elsewhere the output vector of a Jacobian check, the complex step, a
Jacobian row or column, the loss at given leaf values (the ε sweep). `run(kernel, shared,
points, batch_size)` evaluates it at every point and returns the stacked results as float64.

One leaf is perturbed at a time, so everything computed before the leaf's first use does not
depend on the batch axis and `vmap` leaves it unbatched. Each perturbation is built from its
(index, value) pair inside the mapped function: no (m, n) matrix of perturbed parameter
vectors is materialised. Where it pays for a leaf (`traced_loss`: params of
`LOCAL_CHANGES_MIN_SIZE` entries or more, and `local_changes.decision` from the jaxprs), the
change of one entry is followed through the loss (`local_changes`: a weight entry changes one
column of a product, not the whole product); otherwise the leaf is copied with the entry
replaced by an elementwise select, in a program that leaves of the same dtype share where
`sharing` says it pays (`SharedEntryLoss`: the point also says which leaf it moves).

Batches have a fixed size, so one compiled program serves every batch. The size is an upper
bound from the leaf's size, lowered until XLA's compiled memory analysis of the program fits
`memory_budget()` (so a 1e6-parameter leaf cannot exhaust memory). Batches are split over all
local devices with `jax.shard_map` (`devices`), and counted by the progress bar (`progress`).

Compiled programs are kept in a small LRU cache (`CACHE_SIZE` entries) keyed by the kernel
(with its `Problem`: fn and the hashable skeletons of params and args), the requested batch
size, the shapes and dtypes of the shared inputs, the devices and the x64 setting: a second
check of the same function with the same shapes compiles nothing. Programs whose batches have
a structure of their own (fast mode's directions and joint test) are compiled by `call`, ahead
of time: keyed by the shapes, dtypes and shardings of their inputs, and compiled in a
background thread from those shapes alone where they are known before the inputs exist
(`compile_call_ahead`). XLA compiles outside the GIL, so a program compiled ahead compiles
beside whatever the caller does meanwhile (fast mode: the gradient's program).
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from .. import _compiler, _jaxpr
from ..inputs import placement, traces
from ..inputs.problem import Problem
from ..inputs.traces import shapes_key
from . import devices as mesh_devices
from . import local_changes, product_outputs, progress, sharing, unread_entries

# Larger batches stop paying on CPU once a batch's perturbed copies leave the caches; an
# accelerator needs large batches to fill its cores.
MAX_BATCH_CPU = 64
# A change followed through the loss (`local_changes`) that costs little per perturbation
# needs no copy of the leaf: larger batches amortise the cost of each call. One that costs
# more than LOCAL_LARGE_BATCH_MAX_COST units a point (`local_changes.Cost`) takes the
# ordinary batches: its batch's values leave the caches. Measured on 2 CPU cores, float64,
# batches of 256 against 64: a CNN's dense weight (7e3 units) 9.6 against 27 µs a point, a
# transformer block's MLP weight (7e4) 24 against 40 µs; the CNN's first convolution (1.8e6)
# 506 against 430 µs, the block's value weight (3.1e6) 181 against 142 µs.
MAX_BATCH_CPU_LOCAL = 256
LOCAL_LARGE_BATCH_MAX_COST = 5e5
MAX_BATCH_ACCELERATOR = 1024
# Bytes of perturbed-leaf copies allowed per batch by the first guess (before compiling).
BATCH_MEMORY_BUDGET = 256 * 2**20
CACHE_SIZE = 64
# Below this many entries in the params, changes are never followed (`local_changes`): its
# program takes longer to compile, which a few thousand cheap evaluations do not repay.
# From there on, `local_changes.decision` decides per leaf.
LOCAL_CHANGES_MIN_SIZE = 2048


def choose_batch_size(copied_bytes: int, n_points: int, requested: int | None = None,
                      local: bool = False) -> int:
    """First guess of the batch size, never more than needed for `n_points`: the one policy
    behind `batch_size` (a kernel's points) and fast mode's direction batches.

    `copied_bytes`: what one point copies (e.g. its perturbed leaf). `program` lowers the
    size further if the compiled program's temporaries exceed the memory budget; a
    `requested` size is used as given (and lowered the same way).
    """
    if requested is not None:
        return requested
    if jax.default_backend() != "cpu":
        cap = MAX_BATCH_ACCELERATOR
    else:
        cap = MAX_BATCH_CPU_LOCAL if local else MAX_BATCH_CPU
    # a followed change (`local`) copies no leaf: the compiled memory analysis alone bounds it
    by_memory = cap if local else max(1, BATCH_MEMORY_BUDGET // max(1, 4 * copied_bytes))
    needed = 1 << max(0, int(np.ceil(np.log2(max(1, n_points)))))
    return int(min(cap, by_memory, needed))


def batch_size(kernel: Kernel, shared: Any, n_points: int, requested: int | None = None) -> int:
    """The first guess of the batch size for `n_points` points of `kernel` (see
    `choose_batch_size`); a caller that evaluates a leaf in several calls keeps the size it
    chose for the first, so that one compiled program serves them all."""
    return choose_batch_size(kernel.copied_bytes(shared), n_points, requested,
                             local=kernel.takes_large_batches(shared))


def memory_budget(device: Any) -> int:
    """Bytes of temporaries one batch may use on `device`.

    Accelerators: half of the memory not in use. CPU: 1/16 of physical memory, at most
    1 GiB (leaves room for the process, the caller's arrays and XLA's own buffers).
    """
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:
        pass
    if stats and "bytes_limit" in stats:
        return int(0.5 * (stats["bytes_limit"] - stats.get("bytes_in_use", 0)))
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = 8 * 2**30
    return int(min(2**30, physical // 16))


def total_memory_budget(devices: Sequence[Any]) -> int:
    """Bytes of temporaries one program may use over `devices`: an accelerator's budget per
    device (each holds its own slice), the host's once for CPU devices (forced CPU devices
    share one memory)."""
    if devices[0].platform == "cpu":
        return memory_budget(devices[0])
    return memory_budget(devices[0]) * len(devices)


class Kernel:
    """What the engine evaluates at one point: subclasses are frozen dataclasses (hashable:
    with the shapes of their inputs they key the compiled program).

    A batch of points is `(shared, *points)`: `shared` (e.g. the params' and args' dynamic
    leaves) is the same for every point, each array of `points` has one row per point (e.g.
    the index of the moved entry and its value). The engine vmaps `variants(shared)[k]` over
    the rows and runs the first variant that compiles.
    """

    def point_specs(self, shared: Any) -> tuple[jax.ShapeDtypeStruct, ...]:
        """Shape and dtype of one point's inputs (one row of each array of `points`)."""
        raise NotImplementedError

    def variants(self, shared: Any) -> list[Callable[..., Any]]:
        """Functions `one(shared, *point) -> outputs` to try in order: the first that compiles
        is used (e.g. the change followed through the loss, then the direct evaluation)."""
        raise NotImplementedError

    def copied_bytes(self, shared: Any) -> int:
        """Bytes one point copies (its perturbed leaf, its outputs): bounds `batch_size`."""
        raise NotImplementedError

    def takes_large_batches(self, shared: Any) -> bool:
        """Whether a point's change is followed through the loss (`local_changes`) cheaply,
        so that it copies no leaf and larger batches pay."""
        return False


@dataclasses.dataclass(frozen=True)
class MovedEntry(Kernel):
    """A kernel whose point is `(i, v)`: entry `i` of leaf `position` set to `v`, with
    `shared = (param_dynamic, arg_dynamic)`."""

    problem: Any
    position: int

    def point_specs(self, shared):
        leaf = shared[0][self.position]
        return jax.ShapeDtypeStruct((), np.int32), jax.ShapeDtypeStruct((), leaf.dtype)

    def copied_bytes(self, shared):
        leaf = shared[0][self.position]
        return int(leaf.size) * np.dtype(leaf.dtype).itemsize


@dataclasses.dataclass(frozen=True)
class EntryLoss(MovedEntry):
    """The loss with entry `i` of leaf `position` set to `v`."""

    problem: Problem
    # > 0: the points move rows of a table that reach at most this many examples of the
    # batch (`example_plan`), and only those examples are evaluated
    examples: int = 0

    def takes_large_batches(self, shared):
        if self.examples:
            return False
        traced = traced_loss(self.problem, self.position, *shared)
        return traced is not None and traced.per_point <= LOCAL_LARGE_BATCH_MAX_COST

    def variants(self, shared):
        param_dynamic, arg_dynamic = shared
        out = []
        if self.examples:
            closed = loss_jaxpr(self.problem, param_dynamic, arg_dynamic)
            if closed is not None:
                traced = local_changes.Traced(closed, self.position)
                out.append(lambda sh, i, v: traced.at_entry(sh[0], sh[1], i, v, self.examples))
        else:
            traced = traced_loss(self.problem, self.position, param_dynamic, arg_dynamic)
            if traced is not None:  # the change followed through the loss (`local_changes`)
                out.append(lambda sh, i, v: traced.at_entry(sh[0], sh[1], i, v))
        out.append(self._direct)
        return out

    def _direct(self, shared, i, v):
        param_dynamic, arg_dynamic = shared
        base = param_dynamic[self.position]
        dynamic = list(param_dynamic)
        dynamic[self.position] = jnp.where(flat_index(base.shape) == i, v, base)
        return self.problem.loss(dynamic, arg_dynamic)


@dataclasses.dataclass(frozen=True)
class SharedEntryLoss(Kernel):
    """The loss with entry `i` of leaf `positions[j]` set to `v`, at the point `(j, i, v)`:
    one program for leaves of one dtype evaluated directly (`sharing`), with
    `shared = (param_dynamic, arg_dynamic)`."""

    problem: Problem
    positions: tuple[int, ...]

    def point_specs(self, shared):
        leaf = shared[0][self.positions[0]]
        return (jax.ShapeDtypeStruct((), np.int32), jax.ShapeDtypeStruct((), np.int32),
                jax.ShapeDtypeStruct((), leaf.dtype))

    def copied_bytes(self, shared):
        leaves = [shared[0][p] for p in self.positions]
        return sum(int(x.size) * np.dtype(x.dtype).itemsize for x in leaves)

    def variants(self, shared):
        return [self._direct]

    def _direct(self, shared, j, i, v):
        param_dynamic, arg_dynamic = shared
        dynamic = list(param_dynamic)
        at = {}   # one index per shape
        for k, position in enumerate(self.positions):
            base = param_dynamic[position]
            if base.shape not in at:
                at[base.shape] = flat_index(base.shape) == i
            dynamic[position] = jnp.where(at[base.shape] & (j == k), v, base)
        return self.problem.loss(dynamic, arg_dynamic)


def entry_kernel(problem: Problem, position: int, param_dynamic: Sequence[Any],
                 arg_dynamic: Sequence[Any]) -> tuple[Kernel, tuple[int, ...]]:
    """The kernel that evaluates moved entries of leaf `position`, and the columns its points
    take before (index, value): the leaf's own `EntryLoss` (none), or the program it shares
    with other leaves (`SharedEntryLoss`: the leaf's number among them)."""
    group = program_leaves(problem, position, param_dynamic, arg_dynamic)
    if len(group) == 1:
        return EntryLoss(problem, position), ()
    return SharedEntryLoss(problem, group), (group.index(position),)


# What the engine decides from the loss's trace, per problem and shapes (`traces.Memo`, kept
# like the compiled programs and emptied with them by `clear_cache`)
_groups: traces.Memo[dict[int, tuple[int, ...]]] = traces.Memo()


def program_leaves(problem: Problem, position: int, param_dynamic: Sequence[Any],
                   arg_dynamic: Sequence[Any]) -> tuple[int, ...]:
    """The leaves whose moved entries share leaf `position`'s program (itself alone, or a
    group of `sharing.groups` among the checked leaves evaluated directly). Decided once per
    problem and shapes (kept like the compiled programs)."""
    def groups() -> dict[int, tuple[int, ...]]:
        found: dict[int, tuple[int, ...]] = {}
        closed = loss_jaxpr(problem, param_dynamic, arg_dynamic)
        if closed is not None and placement.mesh_of(
                jax.tree_util.tree_leaves(param_dynamic)) is None:
            direct = [p for p in problem.params.checked if p < len(param_dynamic)
                      and np.size(param_dynamic[p]) > 0
                      and jnp.issubdtype(param_dynamic[p].dtype, jnp.floating)
                      and traced_loss(problem, p, param_dynamic, arg_dynamic) is None]
            # a leaf whose first pass goes through its uses' values, where full mode chose
            # so (before any leaf's program: `jobs_for`); other modes do not choose
            key = shapes_key(problem, param_dynamic, arg_dynamic)
            if len(direct) > 1 and key in _output_plans:
                direct = [p for p in direct
                          if output_plan(problem, p, param_dynamic, arg_dynamic) is None]
            for group in sharing.groups(closed, param_dynamic, direct):
                found.update(dict.fromkeys(group, group))
        return found
    found = _groups.get(shapes_key(problem, param_dynamic, arg_dynamic), groups)
    return found.get(position, (position,))


def flat_index(shape: tuple[int, ...]) -> Any:
    """Each entry's row-major flat index, in the leaf's own shape: selecting entry i needs no
    reshape, which a sharded leaf would pay with a reshard (or, under `Explicit` mesh axes,
    could not do without its output sharding named)."""
    index = jnp.zeros(shape, np.int32)
    stride = 1
    for axis in reversed(range(len(shape))):
        index = index + jax.lax.broadcasted_iota(np.int32, shape, axis) * stride
        stride *= shape[axis]
    return index


@dataclasses.dataclass(frozen=True, eq=False)
class Program:
    """A compiled batch program of a kernel, and where its inputs go."""

    compiled: Any
    batch: int
    mesh: Any                  # None on a single device
    temp_bytes: int
    # Params sharded over `mesh`: the batch's sharding (along the axes the params do not
    # use), the shared inputs staying where they are. None: the local devices' own mesh.
    batch_sharding: Any = None

    def place_shared(self, tree: Any) -> Any:
        if self.mesh is None or self.batch_sharding is not None:
            return tree
        return jax.device_put(tree, mesh_devices.replicated(self.mesh))

    def place_batch(self, x: np.ndarray) -> Any:
        if self.batch_sharding is not None:
            return placement.from_host(x, self.batch_sharding)
        if self.mesh is None:
            return x
        return jax.device_put(x, mesh_devices.split_over(self.mesh))

    def __call__(self, shared: Any, points: Sequence[np.ndarray]) -> Any:
        return self.compiled(shared, *(self.place_batch(x) for x in points))

    @property
    def input_shardings(self) -> Any:
        """The shardings the compiled program takes its `(shared, *points)` in."""
        return self.compiled.input_shardings[0]


_programs: collections.OrderedDict[Any, Program] = collections.OrderedDict()
_compilations = 0
_started = 0
_compile_seconds = 0.0
_lock = threading.Lock()  # `compile_ahead` compiles in threads


def compilations() -> int:
    """How many batch programs (`program`, `call`) this process has compiled (for tests and
    benchmarks)."""
    return _compilations


def compilations_started() -> int:
    """How many batch programs this process has started compiling, ahead of their use
    (`compile_ahead`, `compile_call_ahead`) or not: for tests of what compiles when."""
    return _started


def compile_seconds() -> float:
    """Seconds this process has spent compiling batch programs (threads compiling side by
    side each count their own): what a first check pays beyond evaluating."""
    return _compile_seconds


def clear_cache() -> None:
    """Drop every cached compiled program (they hold references to the checked `fn`), and
    the choices of path."""
    _programs.clear()
    _executables.clear()
    traces.clear()   # the choices of path, and the traces of fn


def _signature(tree: Any) -> tuple:
    return tuple((tuple(np.shape(x)), str(x.dtype), bool(getattr(x, "weak_type", False)),
                  x.sharding if placement.is_distributed(x) else None)
                 for x in jax.tree_util.tree_leaves(tree))


_loss_jaxprs: traces.Memo[Any] = traces.Memo()


def loss_jaxpr(problem: Problem, param_dynamic: Sequence[Any],
               arg_dynamic: Sequence[Any]) -> Any | None:
    """The loss's `local_changes.loss_jaxpr`, traced once per problem and shapes (for every
    leaf's choice of path and `sharing`; kept like the compiled programs)."""
    return _loss_jaxprs.get(
        shapes_key(problem, param_dynamic, arg_dynamic),
        lambda: local_changes.loss_jaxpr(problem.loss, param_dynamic, arg_dynamic))


def follows_local_changes(problem: Problem, position: int, param_dynamic: Sequence[Any],
                          arg_dynamic: Sequence[Any]) -> bool:
    """Whether perturbations of this leaf are evaluated by `local_changes`."""
    return traced_loss(problem, position, param_dynamic, arg_dynamic) is not None


_local_paths: traces.Memo[local_changes.Traced | None] = traces.Memo()
_reads: traces.Memo[unread_entries.Reads | None] = traces.Memo()
# (the reads' key, the arrays they read) -> mask; the arrays are kept so that their ids stay theirs
_unread: traces.Memo[tuple[Any, np.ndarray | None]] = traces.Memo()
# a leaf's gathers of rows (`unread_entries.reads_of` with other uses), per problem and shapes;
# the examples each of its rows reaches and the choice made from them, per array of indices
_gathers: traces.Memo[unread_entries.Reads | None] = traces.Memo()
_example_plans: traces.Memo[tuple[Any, ExamplePlan | None]] = traces.Memo()


def _leaf_reads(problem: Problem, position: int, param_dynamic: Sequence[Any],
                arg_dynamic: Sequence[Any], other_uses: bool = False) -> tuple[Any, Any]:
    """(the shapes' key, `unread_entries.reads_of` for leaf `position`; with `other_uses`,
    its gathers and slices beside any other use), found once per problem, leaf and shapes."""
    def reads() -> unread_entries.Reads | None:
        closed = loss_jaxpr(problem, param_dynamic, arg_dynamic)
        return None if closed is None else unread_entries.reads_of(
            closed.jaxpr, closed.consts,
            [k == position for k in range(len(closed.jaxpr.invars))], other_uses)
    key = shapes_key(problem, param_dynamic, arg_dynamic, position)
    return key, (_gathers if other_uses else _reads).get(key, reads)


def _per_indices(cache: traces.Memo, key: Any, reads: unread_entries.Reads,
                 invals: Sequence[Any], compute: Callable[[], Any]) -> Any:
    """`compute()`, once per array of the inputs the indices of `reads` need (kept in the
    cache beside the result, so that their ids stay theirs)."""
    inputs = tuple(x for x, n in zip(invals, reads.needed_in) if n)
    return cache.get((key, tuple(id(x) for x in inputs)), lambda: (inputs, compute()))[1]


def unread_mask(problem: Problem, position: int, param_dynamic: Sequence[Any],
                arg_dynamic: Sequence[Any]) -> np.ndarray | None:
    """The entries of leaf `position` that the loss never reads at these inputs
    (`unread_entries`), as a mask of the leaf's shape, or None (every entry may be read).
    How the leaf is read is found once per problem, leaf and shapes; where it reads, once per
    array of indices. None under `jax.distributed`: every process must evaluate the same
    points, and each may hold other data."""
    if jax.process_count() != 1:
        return None
    key, reads = _leaf_reads(problem, position, param_dynamic, arg_dynamic)
    if reads is None:
        return None
    if not reads.any:   # the loss does not use the leaf at all
        return np.ones(np.shape(param_dynamic[position]), bool)
    invals = list(param_dynamic) + list(arg_dynamic)
    return _per_indices(_unread, key, reads, invals, lambda: unread_entries.unread(
        reads, invals, np.shape(param_dynamic[position])))


@dataclasses.dataclass(frozen=True, eq=False)
class ExamplePlan:
    """The rows of a table leaf (`rows`, a mask) whose points are evaluated on `examples` of
    the batch alone (`EntryLoss.examples`): each reaches at most that many. `evaluations`:
    what a full check's first pass evaluates there (two points per entry of the rows it does
    not skip as unread)."""

    examples: int
    rows: np.ndarray
    evaluations: int

    def takes(self, indices: np.ndarray, leaf: Any) -> np.ndarray:
        """Which of the leaf's flat `indices` fall in the plan's rows."""
        return self.rows[np.asarray(indices, np.int64) // (int(np.size(leaf)) // len(self.rows))]


def example_plan(problem: Problem, position: int, param_dynamic: Sequence[Any],
                 arg_dynamic: Sequence[Any]) -> ExamplePlan | None:
    """For a leaf read by one gather of rows (an embedding table, tied to an output layer or
    not), the rows whose points are evaluated on a few examples of the batch: those reaching
    at most K examples, K a power of two below the batch's count chosen to evaluate fewest
    examples over the leaf's rows (each other row costs the whole batch), where one call costs
    less than on the leaf's own path, its program compiled included (`local_changes.Cost`,
    from the jaxprs);
    None where no K pays. Found once per array of indices; None under `jax.distributed`, on
    params sharded over a mesh, and for small params (as `traced_loss`)."""
    leaf = param_dynamic[position]
    size = sum(math.prod(np.shape(x)) for x in param_dynamic)
    if (jax.process_count() != 1 or size < LOCAL_CHANGES_MIN_SIZE or np.ndim(leaf) < 1
            or placement.mesh_of(jax.tree_util.tree_leaves(param_dynamic)) is not None):
        return None
    key, reads = _leaf_reads(problem, position, param_dynamic, arg_dynamic, other_uses=True)
    if reads is None or not reads.any:
        return None
    invals = list(param_dynamic) + list(arg_dynamic)

    def plan() -> ExamplePlan | None:
        reached = unread_entries.examples_reaching_rows(reads, invals, int(np.shape(leaf)[0]))
        return None if reached is None else _choose_examples(
            problem, position, param_dynamic, arg_dynamic, reached)
    return _per_indices(_example_plans, key, reads, invals, plan)


def _choose_examples(problem: Problem, position: int, param_dynamic: Sequence[Any],
                     arg_dynamic: Sequence[Any], reached: np.ndarray) -> ExamplePlan | None:
    counts = reached.sum(axis=1)
    batch = reached.shape[1]
    options = [1 << j for j in range(int(np.log2(max(batch, 1))) + 1) if 1 << j < batch]
    if not options:
        return None
    examples = min(options, key=lambda k: float(np.where(counts <= k, k, batch).sum()))
    rows = counts <= examples
    leaf = param_dynamic[position]
    # the points a full check evaluates there: rows no index reaches and nothing else reads
    # are not evaluated at all (`unread_mask`)
    unread = unread_mask(problem, position, param_dynamic, arg_dynamic)
    evaluated = rows if unread is None else rows & ~unread.reshape(len(rows), -1).all(axis=1)
    points = 2 * int(np.count_nonzero(evaluated)) * int(np.size(leaf)) // len(rows)
    closed = loss_jaxpr(problem, param_dynamic, arg_dynamic)
    if closed is None or points == 0:
        return None
    # Against the leaf's own path (its followed changes where it takes them, else direct),
    # on one call: this program is compiled beside the leaf's own, which the rows reaching
    # more examples (and the leaves sharing it) still need, so it must repay its compilation
    # on the first call (`local_changes.decision` weighs `CALLS` calls where a program
    # replaces another). Interpreted, it is counted as the leaf's followed changes are.
    direct = local_changes.direct_cost(closed, [position], param_dynamic)
    per_point = _own_per_point(problem, position, param_dynamic, arg_dynamic, closed)

    def pays(cost: local_changes.Cost) -> bool:
        return cost.seconds(points, local_changes.LOCAL_SLOWDOWN) < \
            per_point * points / local_changes.UNITS_PER_SECOND

    # A screen before tracing the path (a few tenths of a second of Python on a transformer
    # block): the direct evaluation's work on K of the batch's examples, in a program twice
    # the loss's size (its values at θ beside the K examples').
    if not pays(local_changes.Cost(direct.per_point * examples / batch,
                                   2 * direct.equations)):
        return None
    traced = local_changes.Traced(closed, position)
    point = (jax.ShapeDtypeStruct((), np.int32), jax.ShapeDtypeStruct((), leaf.dtype))
    shared = (tuple(param_dynamic), tuple(arg_dynamic))
    try:
        cost = local_changes.cost(
            lambda sh, i, v: traced.at_entry(sh[0], sh[1], i, v, examples), shared, *point)
    except Exception:  # a rule that cannot trace: the leaf's own path
        return None
    if not pays(cost):
        return None
    return ExamplePlan(examples, rows, points)


def traced_loss(problem: Problem, position: int, param_dynamic: Sequence[Any],
                arg_dynamic: Sequence[Any]) -> local_changes.Traced | None:
    """The loss traced for `local_changes`, or None where perturbations are evaluated
    directly: small params, a loss that does not trace, or a leaf whose changes cost more to
    follow than to evaluate (`local_changes.decision`, from the jaxprs of both). Decided once
    per problem, leaf and shapes (kept like the compiled programs)."""
    size = sum(math.prod(np.shape(x)) for x in param_dynamic)
    if size < LOCAL_CHANGES_MIN_SIZE:
        return None
    def path() -> local_changes.Traced | None:
        closed = loss_jaxpr(problem, param_dynamic, arg_dynamic)
        traced = None if closed is None else local_changes.trace(
            problem.loss, position, param_dynamic, arg_dynamic, closed)
        if traced is None:
            return None
        cost = local_changes.decision(traced, param_dynamic, arg_dynamic)
        return None if cost is None else dataclasses.replace(traced, per_point=cost.per_point)
    return _local_paths.get(shapes_key(problem, param_dynamic, arg_dynamic, position), path)


_output_plans: traces.Memo[dict[int, product_outputs.Plan]] = traces.Memo()
# (the plans, the params' and args' ids) -> (params, args, the plans at them): one evaluation
# of the loss at θ for every leaf of a check that takes this path
_outputs_at: traces.Memo[tuple[Any, Any, tuple[product_outputs.AtTheta, ...]]] = traces.Memo()


def output_plan(problem: Problem, position: int, param_dynamic: Sequence[Any],
                arg_dynamic: Sequence[Any]) -> product_outputs.Plan | None:
    """The plan to take a full check's first pass over leaf `position` through the values
    its uses reach while they stay affine in it (`product_outputs`), or None: where the cost
    model says so (`_output_plans`). None under `jax.distributed`, on params sharded over a
    mesh, and for small params (as `traced_loss`)."""
    if not _outputs_possible(param_dynamic):
        return None
    plans = _output_plans.get(shapes_key(problem, param_dynamic, arg_dynamic),
                              lambda: _choose_outputs(problem, param_dynamic, arg_dynamic))
    return plans.get(position)


def _choose_outputs(problem: Problem, param_dynamic: Sequence[Any],
                    arg_dynamic: Sequence[Any]) -> dict[int, product_outputs.Plan]:
    """The leaves whose first pass goes through their uses' values, with their plans: where
    the cost model says it is quicker than the leaf's own points (followed or direct; its own
    program charged no compilation), each value's program compiled once and evaluated on
    `local_changes.CALLS` calls. Leaves whose uses reach one value (a product and the bias
    added to it; the queries' and keys' weights, at the attention scores) share its points:
    a leaf pays only for the values no leaf taken before it pays for, and a leaf left out at
    first is taken where the others paid for all its values."""
    closed = loss_jaxpr(problem, param_dynamic, arg_dynamic)
    if closed is None:
        return {}
    n, m = len(param_dynamic), len(arg_dynamic)
    problems: dict[int, Problem] = {}     # one problem per value, whichever leaf reaches it
    candidates: dict[int, product_outputs.Plan] = {}
    for position in problem.params.checked:
        leaf = param_dynamic[position] if position < n else None
        if leaf is None or np.size(leaf) == 0 or not jnp.issubdtype(leaf.dtype, jnp.floating):
            continue
        found = product_outputs.cuts(closed.jaxpr, position)
        if found is not None:
            candidates[position] = product_outputs.Plan(closed, position, found, tuple(
                problems.setdefault(c.last, product_outputs.output_problem(closed, c, n, m))
                for c in found))
    seconds: dict[int, float] = {}

    def value_seconds(plan: product_outputs.Plan, k: int) -> float:
        last = plan.cuts[k].last
        if last not in seconds:
            dynamic = (*param_dynamic, plan.placeholders[k])   # shapes only
            seconds[last] = _path_seconds(plan.problems[k], n, dynamic, arg_dynamic,
                                          2 * math.prod(plan.placeholders[k].shape))
        return seconds[last]

    chosen: dict[int, product_outputs.Plan] = {}
    paid: set[int] = set()
    for _ in range(2):
        for position, plan in candidates.items():
            if position in chosen:
                continue
            budget = _own_seconds(problem, position, param_dynamic, arg_dynamic, closed)
            spent = 0.0
            for k, cut in enumerate(plan.cuts):
                if cut.last not in paid:
                    spent += value_seconds(plan, k)
                if spent >= budget:
                    break
            if spent < budget:
                chosen[position] = plan
                paid.update(c.last for c in plan.cuts)
    return chosen


def _own_per_point(problem: Problem, position: int, param_dynamic: Sequence[Any],
                   arg_dynamic: Sequence[Any], closed: Any) -> float:
    """What a point of the leaf costs on its own path: its followed changes (counted
    `LOCAL_SLOWDOWN` times slower) where it takes them, else its direct evaluation."""
    own = traced_loss(problem, position, param_dynamic, arg_dynamic)
    if own is not None:
        return own.per_point * local_changes.LOCAL_SLOWDOWN
    return local_changes.direct_cost(closed, [position], param_dynamic).per_point


def _own_seconds(problem: Problem, position: int, param_dynamic: Sequence[Any],
                 arg_dynamic: Sequence[Any], closed: Any) -> float:
    """A full check's first pass over the leaf on its own path, over `local_changes.CALLS`
    calls, its program charged no compilation (it may share one)."""
    points = 2 * int(np.size(param_dynamic[position]))
    per_point = _own_per_point(problem, position, param_dynamic, arg_dynamic, closed)
    return local_changes.Cost(per_point, 0).seconds(points, calls=local_changes.CALLS)


def _path_seconds(problem: Problem, position: int, param_dynamic: Sequence[Any],
                  arg_dynamic: Sequence[Any], points: int) -> float:
    """What `points` points of leaf `position` cost on its own path (followed or direct), its
    program compiled once, over `local_changes.CALLS` calls."""
    closed = loss_jaxpr(problem, param_dynamic, arg_dynamic)
    if closed is None:
        return math.inf
    traced = traced_loss(problem, position, param_dynamic, arg_dynamic)
    if traced is None:
        return local_changes.direct_cost(closed, [position], param_dynamic).seconds(
            points, calls=local_changes.CALLS)
    # the followed path's program holds the loss at θ beside the changed equations
    equations = 2 * sum(1 for _ in _jaxpr.equations(closed.jaxpr))
    return local_changes.Cost(traced.per_point, equations).seconds(
        points, local_changes.LOCAL_SLOWDOWN, calls=local_changes.CALLS)


def _outputs_possible(param_dynamic: Sequence[Any]) -> bool:
    """Whether any leaf of these params may take its first pass through values: one
    process, params not sharded over a mesh, not small (as `traced_loss`)."""
    size = sum(math.prod(np.shape(x)) for x in param_dynamic)
    return (jax.process_count() == 1 and size >= LOCAL_CHANGES_MIN_SIZE
            and placement.mesh_of(jax.tree_util.tree_leaves(param_dynamic)) is None)


def output_plans(tasks: Sequence[Any]) -> list[product_outputs.Plan | None]:
    """Per task of a full check, the plan of its first pass through the values its uses reach
    (`output_plan`; not in native precision, whose passes are refined further), or None."""
    if not tasks or not _outputs_possible(tasks[0].param_dynamic):
        return [None] * len(tasks)
    return [None if t.sharp or np.size(t.leaf) == 0
            else output_plan(t.problem, t.position, t.param_dynamic, t.arg_dynamic)
            for t in tasks]


def _taken(plans: Sequence[product_outputs.Plan | None]) -> tuple[product_outputs.Plan, ...]:
    """The plans taken, in the order of their leaves: the key of their two programs."""
    return tuple(sorted((p for p in plans if p is not None), key=lambda p: p.position))


def outputs_at(tasks: Sequence[Any]) -> list[product_outputs.AtTheta | None]:
    """Per task, its plan (`output_plans`) at the task's θ, or None. The outputs of every
    leaf of a check that takes this path come from one program (once per arrays: kept beside
    them, so that their ids stay theirs)."""
    plans = output_plans(tasks)
    taken = _taken(plans)
    if not taken:
        return [None] * len(tasks)
    first = tasks[plans.index(taken[0])]
    pd, ad = tuple(first.param_dynamic), tuple(first.arg_dynamic)

    def compute() -> tuple[Any, Any, tuple[product_outputs.AtTheta, ...]]:
        values, operands = call(product_outputs.outputs, (taken,), pd, ad)
        return pd, ad, tuple(product_outputs.AtTheta(p, pd, ys, taken, operands)
                             for p, ys in zip(taken, values))
    key = (taken, id(first.param_dynamic), id(first.arg_dynamic))
    at = dict(zip(taken, _outputs_at.get(key, compute)[2]))
    return [None if p is None else at[p] for p in plans]


def _differences_specs(plans: Sequence[product_outputs.Plan]) -> tuple:
    """The shapes of `product_outputs.transposed`'s differences: per plan, each output's
    differences then their roundings, flat, in the output's dtype."""
    def flat(var: Any) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct((math.prod(var.aval.shape),), var.aval.dtype)
    return tuple(tuple(flat(p.output_var(k)) for k in range(len(p.cuts))) * 2 for p in plans)


def _compile_outputs_ahead(tasks: Sequence[Any]) -> None:
    """Start compiling the two programs of the values' path for these tasks (`outputs_at`'s
    and `transposed`'s), in the background, from the shapes alone."""
    plans = output_plans(tasks)
    taken = _taken(plans)
    if not taken:
        return
    first = tasks[plans.index(taken[0])]
    pd, ad = tuple(first.param_dynamic), tuple(first.arg_dynamic)
    compile_call_ahead(product_outputs.outputs, (taken,), pd, ad)
    operands = tuple(jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype)
                     for v in product_outputs.chain_operands(taken))
    compile_call_ahead(product_outputs.transposed, (taken,),
                       tuple(pd[p.position] for p in taken), operands,
                       _differences_specs(taken))


def transposed(ats: Sequence[product_outputs.AtTheta],
               per_output: Sequence[Sequence[np.ndarray]]) -> list[tuple[np.ndarray, ...]]:
    """`product_outputs.transposed` for the plans of `ats` (of one check, `outputs_at`), in
    the one program of all the check's plans (zeros for a plan whose values were not
    evaluated: its leaf's own first pass was taken); float64 on the host, in `ats`' order."""
    taken, pd = ats[0].taken, ats[0].param_dynamic
    given = {id(at.plan): values for at, values in zip(ats, per_output)}
    specs = _differences_specs(taken)
    values = tuple(tuple(jnp.asarray(given[id(p)][j] if id(p) in given else np.zeros(s.shape),
                                     s.dtype) for j, s in enumerate(spec))
                   for p, spec in zip(taken, specs))
    out = call(product_outputs.transposed, (taken,), tuple(pd[p.position] for p in taken),
               tuple(ats[0].operands), values)
    found = {id(p): pair for p, pair in zip(taken, out)}
    return [tuple(placement.to_host(x).astype(np.float64) for x in found[id(at.plan)])
            for at in ats]


def _compile(kernel: Kernel, shared: Any, batch: int, devices: tuple[Any, ...]) -> Program:
    *preferred, last = kernel.variants(shared)
    for one in preferred:
        try:
            return _compile_with(kernel, one, shared, batch, devices)
        except Exception:  # e.g. an op the interpreter cannot replay: the next variant
            pass
    return _compile_with(kernel, last, shared, batch, devices)


def _compile_with(kernel: Kernel, one: Callable[..., Any], shared: Any, batch: int,
                  devices: tuple[Any, ...]) -> Program:
    global _compilations, _compile_seconds
    start = time.perf_counter()
    specs = kernel.point_specs(shared)
    platform = devices[0].platform

    def f(shared, *points):
        return jax.vmap(lambda *point: one(shared, *point))(*points)

    leaves = jax.tree_util.tree_leaves(shared)
    mesh, batch_sharding = placement.mesh_of(leaves), None
    if mesh is not None:
        # Sharded params, evaluated in place: the shared inputs keep their shardings (taken
        # from the arrays), the batch goes along the mesh axes they do not use, and only the
        # results, replicated, come back.
        batch_sharding = batch_sharding_of(mesh, leaves)
        jitted = jax.jit(f, out_shardings=placement.replicated(mesh))
    elif len(devices) > 1:
        mesh = mesh_devices.mesh_of(devices)
        shared_s, split = mesh_devices.replicated(mesh), mesh_devices.split_over(mesh)
        jitted = jax.jit(mesh_devices.shard_batch(f, mesh, len(specs)),
                         in_shardings=(shared_s,) + (split,) * len(specs), out_shardings=split)
    else:
        jitted = jax.jit(f)
    batch_specs = [jax.ShapeDtypeStruct((batch,) + s.shape, s.dtype, sharding=batch_sharding)
                   for s in specs]
    with placement.programs_over(leaves):
        compiled = _compiler.compile_lowered(jitted.lower(shared, *batch_specs), platform)
    with _lock:
        _compilations += 1
        _compile_seconds += time.perf_counter() - start
    try:
        analysis = compiled.memory_analysis()
    except Exception:  # not every backend analyses memory
        analysis = None
    if analysis is not None:
        temp = int(analysis.temp_size_in_bytes)
    else:  # assume a copy of the shared inputs per point
        temp = batch * sum(int(x.size) * x.dtype.itemsize for x in leaves)
    return Program(compiled, batch, mesh, temp, batch_sharding)


def batch_sharding_of(mesh: Any, leaves: Sequence[Any]) -> NamedSharding:
    """Points of a batch split along the mesh axes no leaf is sharded along (replicated when
    the params use every axis: the devices then evaluate each point together)."""
    return NamedSharding(mesh, placement.along(placement.free_axes(mesh, leaves)))


def _batch_multiple(shared: Any, devices: tuple[Any, ...]) -> int:
    """Batches are a multiple of this: the devices a batch is split over."""
    leaves = jax.tree_util.tree_leaves(shared)
    mesh = placement.mesh_of(leaves)
    if mesh is None:
        return len(devices)
    return int(np.prod([mesh.shape[a] for a in placement.free_axes(mesh, leaves)],
                       dtype=np.int64))


# Programs being compiled (by `program`, in this thread or a background one): a later
# request for the same key waits for it instead of compiling it again.
_compiling: dict[Any, concurrent.futures.Future] = {}
# when each program under way started compiling (`time.monotonic`; not yet if absent: queued)
_compile_started: dict[Any, float] = {}


def program(kernel: Kernel, shared: Any, batch_size: int) -> Program:
    """The compiled program for batches of at most `batch_size` points of `kernel` (the memory
    budget may lower it), or a cached one of the same kernel and shapes for larger batches."""
    global _started
    devices = mesh_devices.devices_for(jax.tree_util.tree_leaves(shared))
    key = _key(kernel, shared, batch_size, devices)
    with _lock:
        found = _programs.get(key)
        if found is not None:
            _programs.move_to_end(key)
            return found
        found = _larger(key)
        if found is not None:
            return found
        future = _compiling.get(key) or _larger_compiling(key)
        if future is None:
            _started += 1
            _compiling[key] = mine = concurrent.futures.Future()
    if future is not None:   # under way elsewhere
        return future.result()
    return _compile_into(mine, key, kernel, shared, batch_size, devices)


def _compile_into(future: concurrent.futures.Future, key: tuple, kernel: Kernel, shared: Any,
                  batch_size: int, devices: tuple[Any, ...]) -> Program:
    """Compile the program registered as under way at `key`, cache it and resolve `future`
    (waited on by other requests for it)."""
    with _lock:
        _compile_started[key] = time.monotonic()
    try:
        p = _fitting(kernel, shared, batch_size, devices)
    except BaseException as e:
        with _lock:
            del _compiling[key]
            _compile_started.pop(key, None)
        future.set_exception(e)
        raise
    with _lock:
        _programs[key] = p
        _trim(_programs)
        del _compiling[key]
        _compile_started.pop(key, None)
    future.set_result(p)
    return p


def _fitting(kernel: Kernel, shared: Any, batch_size: int, devices: tuple[Any, ...]) -> Program:
    """The program compiled for batches of `batch_size` points, halved until its temporaries
    fit the memory budget."""
    budget = total_memory_budget(devices)
    multiple = _batch_multiple(shared, devices)
    batch = mesh_devices.round_to_devices(batch_size, multiple)
    p = _compile(kernel, shared, batch, devices)
    while p.temp_bytes > budget and batch > multiple:
        batch = mesh_devices.round_to_devices(batch // 2, multiple)
        p = _compile(kernel, shared, batch, devices)
    return p


def _larger(key: tuple) -> Program | None:
    """A cached program of the same kernel and shapes for larger batches (a later call with
    fewer points, e.g. Richardson levels after the first pass, pads its batch instead of
    compiling the same shapes again); the smallest such one."""
    return _smallest_larger(key, _programs)


def _larger_compiling(key: tuple) -> concurrent.futures.Future | None:
    """A program of the same kernel and shapes for larger batches under way (`_larger`)."""
    return _smallest_larger(key, _compiling)


def _smallest_larger(key: tuple, entries: Mapping[tuple, Any]) -> Any:
    """The entry of the same kernel and shapes as `key` for the smallest batch size at least
    `key`'s, or None."""
    kernel, batch_size, *rest = key
    found = [(k[1], x) for k, x in entries.items()
             if k[0] == kernel and k[1] >= batch_size and list(k[2:]) == rest]
    return min(found, key=lambda kx: kx[0])[1] if found else None


def cached_programs() -> list[Program]:
    """The compiled programs in the cache, oldest first (for tests of where inputs go)."""
    with _lock:
        return list(_programs.values())


def _key(kernel: Kernel, shared: Any, batch_size: int, devices: tuple[Any, ...]) -> tuple:
    return (kernel, batch_size, _signature(shared), devices,
            jax.dtypes.canonicalize_dtype(np.float64) == np.float64)


def compile_ahead(requests: Sequence[tuple[Kernel, Any, int]],
                  longest_first: bool = False) -> None:
    """Start compiling the programs of several kernels in background threads (one per core),
    and return.

    Each request is `(kernel, shared, batch_size)` as given to `program`. XLA compiles
    outside the GIL, so on a first check the leaves' programs compile side by side, and
    beside what the caller does meanwhile (full mode: the gradient's program), instead of
    one after another; `program` waits for a program under way. `longest_first`: those not
    compiled yet start in the order of `_compile_estimate`, largest first.
    """
    global _started
    pool = _pool()
    work = _in_callers_context(_compile_into)
    keyed = []
    for kernel, shared, size in requests:
        devices = mesh_devices.devices_for(jax.tree_util.tree_leaves(shared))
        key = _key(kernel, shared, size, devices)
        with _lock:
            if key in _programs or key in _compiling:
                continue
        keyed.append((key, kernel, shared, size, devices))
    if longest_first:   # the threads then finish together
        keyed.sort(key=lambda r: -_compile_estimate(r[1], r[2]))
    for key, kernel, shared, size, devices in keyed:
        with _lock:   # under way from now on: `program` waits for it
            if key in _programs or key in _compiling:
                continue
            _started += 1
            _compiling[key] = future = concurrent.futures.Future()
        # an error is raised where the program is used (`program` waits for it)
        future.add_done_callback(lambda f: f.exception())
        pool.submit(work, future, key, kernel, shared, size, devices)


def run(kernel: Kernel, shared: Any, points: Sequence[np.ndarray | jax.Array],
        batch_size: int) -> Any:
    """`kernel` at every point (row k of each array of `points`): its outputs stacked along a
    first axis of length m, as float64 numpy arrays (the kernel's output tree).

    Points go in fixed-size batches (the last padded with copies of the first point, whose
    results are dropped); `batch_size` is an upper bound that the memory budget may lower;
    results do not depend on it. With a progress bar, finished batches are counted.
    """
    m = len(points[0])
    p = program(kernel, shared, batch_size)
    b = p.batch
    pad = (-m) % b
    specs = kernel.point_specs(shared)
    points = [np.concatenate([np.asarray(x), np.repeat(np.asarray(x)[:1], pad, axis=0)])
              .astype(s.dtype) for x, s in zip(points, specs)]
    shared = p.place_shared(shared)
    track = progress.active()
    outs, reported = [], 0
    for k, s in enumerate(range(0, m + pad, b)):
        # Dispatched asynchronously; with a progress bar, finished batches are counted two
        # behind the one just dispatched so the device never waits for the host.
        outs.append(p(shared, [x[s:s + b] for x in points]))
        if track and k >= 2:
            jax.block_until_ready(outs[k - 2])
            done = min(m, (k - 1) * b)
            progress.advance(done - reported)
            reported = done
    result = jax.tree_util.tree_map(
        lambda *o: np.concatenate([placement.to_host(x).astype(np.float64) for x in o])[:m],
        *outs)
    if track:
        progress.advance(m - reported)
    return result


@functools.partial(jax.jit, static_argnums=(0, 1))
def _call(fn: Callable[..., Any], static: tuple, *dynamic: Any) -> Any:
    return fn(*static, *dynamic)


# The whole-batch programs of `call`, compiled ahead of time (`compile_call_ahead`) or at
# their first use: futures of `jax.stages.Compiled`, by `_call_key`.
_executables: collections.OrderedDict[Any, concurrent.futures.Future] = \
    collections.OrderedDict()
_background: concurrent.futures.ThreadPoolExecutor | None = None


def spec_of(x: Any) -> jax.ShapeDtypeStruct:
    """What a compiled program is strict about in an input: shape, dtype, weak type, and
    where it lives unless that is where an uncommitted array would (one default device)."""
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    aval = jax.typeof(x)
    sharding = x.sharding if isinstance(x, jax.Array) else None
    if sharding is not None and not placement.is_distributed(x) and not x.committed:
        sharding = None
    return jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=aval.weak_type,
                                sharding=sharding)


def _call_key(fn: Callable[..., Any], static: tuple, specs: tuple) -> tuple:
    leaves, tree = jax.tree_util.tree_flatten(specs)
    return (fn, static, tree,
            tuple((s.shape, str(s.dtype), bool(s.weak_type), s.sharding) for s in leaves),
            bool(jax.config.jax_enable_x64),  # pyright: ignore[reportAttributeAccessIssue]
            jax.sharding.get_mesh())


def _compile_call(fn: Callable[..., Any], static: tuple, specs: tuple) -> Any:
    global _compilations, _compile_seconds
    start = time.perf_counter()
    with placement.programs_over(jax.tree_util.tree_leaves(specs)):
        compiled = _compiler.compile_lowered(
            _call.lower(fn, static, *specs),
            _compiler.platform_of(jax.tree_util.tree_leaves(specs)), _compiler.is_run_once(fn))
    with _lock:
        _compilations += 1
        _compile_seconds += time.perf_counter() - start
    return compiled


def _in_callers_context(work: Callable[..., Any]) -> Callable[..., Any]:
    """`work` as it would run here, in another thread: x64, the default device and the mesh
    of `jax.set_mesh` (which `fn`'s own shardings may name) are thread-local settings. The
    first two are properties JAX adds to Config at runtime; its stub does not declare them."""
    x64 = bool(jax.config.jax_enable_x64)  # pyright: ignore[reportAttributeAccessIssue]
    device = jax.config.jax_default_device  # pyright: ignore[reportAttributeAccessIssue]
    mesh = jax.sharding.get_mesh()

    def run(*args: Any) -> Any:
        with jax.enable_x64(x64), jax.default_device(device), contextlib.ExitStack() as stack:
            if not mesh.empty:
                stack.enter_context(jax.set_mesh(mesh))
            return work(*args)
    return run


def compile_call_ahead(fn: Callable[..., Any], static: tuple, *specs: Any) -> None:
    """Start compiling `call(fn, static, *dynamic)` for inputs like `specs` (arrays or
    `jax.ShapeDtypeStruct`s, as `spec_of` reads them) in a background thread, and return.

    XLA compiles outside the GIL: a program whose inputs' shapes are known before they are
    computed (fast mode's joint test, before the gradient) compiles beside the program that
    computes them. `call` with inputs of these specs waits for it; a compilation that failed
    is done again there, so that its error is raised where the program is used."""
    global _started
    specs = jax.tree_util.tree_map(spec_of, specs)
    key = _call_key(fn, static, specs)
    pool = _pool()
    with _lock:
        if key in _executables:
            return
        _started += 1
        _executables[key] = pool.submit(_in_callers_context(_compile_call), fn, static, specs)
        _trim(_executables)


def beside(work: Callable[[], Any], arrays: Sequence[Any]) -> concurrent.futures.Future | None:
    """Start `work()` (e.g. the gradient at params: mostly compiling its program) in a
    background thread beside what the caller does next, and return its future; None, and
    nothing started, where `arrays` are sharded over a mesh or several processes run: there
    every program must start in the same order on every device (collectives wait on each
    other)."""
    leaves = jax.tree_util.tree_leaves(arrays)
    if jax.process_count() != 1 or placement.mesh_of(leaves) is not None:
        return None
    return _pool().submit(_in_callers_context(work))


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that compile ahead, one per core (started at the first use)."""
    global _background
    with _lock:
        if _background is None:
            _background = concurrent.futures.ThreadPoolExecutor(
                max_workers=os.cpu_count() or 1, thread_name_prefix="jaxcheck-compile")
        return _background


def _trim(cache: collections.OrderedDict) -> None:
    while len(cache) > CACHE_SIZE:
        cache.popitem(last=False)


def _executable(fn: Callable[..., Any], static: tuple, dynamic: tuple) -> Any:
    global _started
    specs = jax.tree_util.tree_map(spec_of, dynamic)
    key = _call_key(fn, static, specs)
    with _lock:
        future = _executables.get(key)
        if future is not None:
            _executables.move_to_end(key)
    if future is not None:
        try:
            return future.result()
        except Exception:  # compiled again below, raising here
            pass
    with _lock:
        _started += 1
    compiled = _compile_call(fn, static, specs)
    done: concurrent.futures.Future = concurrent.futures.Future()
    done.set_result(compiled)
    with _lock:
        _executables[key] = done
        _trim(_executables)
    return compiled


def call(fn: Callable[..., Any], static: tuple, *dynamic: Any) -> Any:
    """`fn(*static, *dynamic)` compiled once per (fn, static, shapes, dtypes and shardings of
    `dynamic`, x64, the mesh of `jax.set_mesh`); `fn` is a module-level function and `static`
    hashable (e.g. the `Problem` and leaf positions). For the whole-batch programs whose
    batches have a structure of their own (all steps of a direction share its vector, all
    directions of the joint test their signs). Counted in `compilations` and
    `compile_seconds`; `compile_call_ahead` compiles one before its inputs exist."""
    return _executable(fn, static, dynamic)(*dynamic)


def call_batches(fn: Callable[..., Any], static: tuple, shared: Sequence[Any],
                 batches: Iterable[Sequence[Any]], count: int) -> Any:
    """`call(fn, static, *shared, *batch)` for each batch (dispatched asynchronously, so the
    device never waits for the host), the outputs concatenated along their first axis as
    float64 and cut to the first `count` rows (the last batch is padding beyond them)."""
    outs = [call(fn, static, *shared, *batch) for batch in batches]
    return jax.tree_util.tree_map(
        lambda *o: np.concatenate([placement.to_host(x).astype(np.float64) for x in o])[:count],
        *outs)


def evaluate(problem: Problem, position: int, param_dynamic: Sequence[Any],
             arg_dynamic: Sequence[Any], indices: np.ndarray, values: np.ndarray,
             batch_size: int) -> np.ndarray:
    """Loss values (float64) with component `indices[k]` of leaf `position` set to `values[k]`.

    `batch_size` is an upper bound: the memory budget may lower it; results do not depend on it.
    Points that move an entry the loss never reads (`unread_mask`) all have the loss at θ:
    the first of them is evaluated and its value given to the others (and the progress bar
    counts the evaluations made, as `first_pass_evaluations` does).
    """
    if len(indices) == 0:
        return np.zeros(0)
    mask = unread_mask(problem, position, param_dynamic, arg_dynamic)
    same = None if mask is None else mask.reshape(-1)[np.asarray(indices, np.int64)]
    if same is not None and np.count_nonzero(same) > 1:
        first = int(np.argmax(same))
        keep = ~same
        keep[first] = True
        out = np.empty(len(indices))
        out[keep] = _evaluate(problem, position, param_dynamic, arg_dynamic,
                              np.asarray(indices)[keep], np.asarray(values)[keep], batch_size)
        out[same] = out[first]
        return out
    return _evaluate(problem, position, param_dynamic, arg_dynamic, indices, values, batch_size)


def _evaluate(problem: Problem, position: int, param_dynamic: Sequence[Any],
              arg_dynamic: Sequence[Any], indices: np.ndarray, values: np.ndarray,
              batch_size: int) -> np.ndarray:
    plan = example_plan(problem, position, param_dynamic, arg_dynamic)
    if plan is not None:
        few = plan.takes(indices, param_dynamic[position])
        if few.any():
            kernel, size = _examples_request(plan, problem, position, param_dynamic,
                                             arg_dynamic, batch_size)
            out = np.empty(len(indices))
            out[few] = run(kernel, (tuple(param_dynamic), tuple(arg_dynamic)),
                           (np.asarray(indices)[few], np.asarray(values)[few]), size)
            if not few.all():
                out[~few] = _evaluate_each(problem, position, param_dynamic, arg_dynamic,
                                           np.asarray(indices)[~few],
                                           np.asarray(values)[~few], batch_size)
            return out
    return _evaluate_each(problem, position, param_dynamic, arg_dynamic, indices, values,
                          batch_size)


def _examples_request(plan: ExamplePlan, problem: Problem, position: int,
                      param_dynamic: Sequence[Any], arg_dynamic: Sequence[Any],
                      limit: int) -> tuple[Kernel, int]:
    """The kernel of a plan's points and its batch size: for a full check's first pass over
    its rows, at most `limit`, the leaf's own (`jobs_for` compiles the same ahead)."""
    kernel = EntryLoss(problem, position, plan.examples)
    shared = (tuple(param_dynamic), tuple(arg_dynamic))
    return kernel, min(limit, batch_size(kernel, shared, plan.evaluations))


def _evaluate_each(problem: Problem, position: int, param_dynamic: Sequence[Any],
                   arg_dynamic: Sequence[Any], indices: np.ndarray, values: np.ndarray,
                   batch_size: int) -> np.ndarray:
    kernel, which = entry_kernel(problem, position, param_dynamic, arg_dynamic)
    columns = [np.full(len(indices), w, np.int32) for w in which]
    return run(kernel, (tuple(param_dynamic), tuple(arg_dynamic)),
               (*columns, indices, values), batch_size)


def seconds_per_evaluation(problem: Problem, position: int, param_dynamic: Sequence[Any],
                           arg_dynamic: Sequence[Any], n_points: int,
                           requested: int | None = None) -> float:
    """Seconds per perturbed evaluation of a leaf, from timing one batch (compiled first)."""
    leaf = param_dynamic[position]
    shared = (tuple(param_dynamic), tuple(arg_dynamic))
    kernel, which = entry_kernel(problem, position, param_dynamic, arg_dynamic)
    p = program(kernel, shared, batch_size(kernel, shared, n_points, requested))
    placed = p.place_shared(shared)
    first = placement.entries(leaf, np.zeros(1, np.int64))   # on a CPU, NumPy's read
    points = [np.full(p.batch, w, np.int32) for w in which]
    points += [np.zeros(p.batch, np.int32), np.repeat(first, p.batch)]
    # One run: its allocations make it slightly slower than the next (a cautious estimate).
    start = time.perf_counter()
    jax.block_until_ready(p(placed, points))
    return (time.perf_counter() - start) / p.batch


def programs_of(tasks: Sequence[Any]) -> dict[Kernel, list[int]]:
    """The indices of full mode's leaf tasks grouped by the program that evaluates their first
    pass (`entry_kernel`; a leaf whose first pass goes through the values its uses reach, by
    its first value's), programs in the order in which `jobs_for` starts compiling them (the
    longest compilations first, `_compile_estimate`)."""
    programs: dict[Kernel, list[int]] = {}
    shared_of: dict[Kernel, Any] = {}
    for k, (t, plan) in enumerate(zip(tasks, output_plans(tasks))):
        if plan is not None:
            shared = (_output_dynamic(plan, t.param_dynamic, 0), t.arg_dynamic)
            kernel, _ = entry_kernel(plan.problems[0], len(t.param_dynamic), *shared)
        else:
            shared = (t.param_dynamic, t.arg_dynamic)
            kernel, _ = entry_kernel(t.problem, t.position, *shared)
        programs.setdefault(kernel, []).append(k)
        shared_of.setdefault(kernel, shared)
    if not compiling():   # a repeated call: every program is there, in any order
        return programs
    estimates = {k: _compile_estimate(k, shared_of[k]) for k in programs}
    return {k: programs[k] for k in sorted(programs, key=lambda k: -estimates[k])}


def shared_program(problem: Problem, position: int, param_dynamic: Sequence[Any],
                   arg_dynamic: Sequence[Any]) -> Kernel | None:
    """The program that evaluates every point of leaf `position` where other leaves share it
    (`SharedEntryLoss`, no `example_plan` beside it): its f(θ) is then that of each of them
    that evaluates all its points there too. None where the leaf has a program of its own or
    splits its points."""
    kernel, _ = entry_kernel(problem, position, param_dynamic, arg_dynamic)
    if not isinstance(kernel, SharedEntryLoss) or example_plan(
            problem, position, param_dynamic, arg_dynamic) is not None:
        return None
    return kernel


def first_pass_kernels(task: Any) -> tuple[Kernel, ...]:
    """The kernels of a full check's first pass over a task's leaf: its own (and its rows'
    on a few examples, `example_plan`), or those of the values its uses reach
    (`output_plan`)."""
    n = len(task.param_dynamic)
    plan = output_plans([task])[0]
    if plan is not None:
        return tuple(entry_kernel(p, n, _output_dynamic(plan, task.param_dynamic, k),
                                  task.arg_dynamic)[0] for k, p in enumerate(plan.problems))
    kernel, _ = entry_kernel(task.problem, task.position, task.param_dynamic, task.arg_dynamic)
    few = example_plan(task.problem, task.position, task.param_dynamic, task.arg_dynamic)
    if few is not None:
        return kernel, EntryLoss(task.problem, task.position, few.examples)
    return (kernel,)


def compiling() -> bool:
    """Whether any program is being compiled (or waits for a compiling thread)."""
    with _lock:
        return bool(_compiling)


def readiness(kernels: Sequence[Kernel]) -> float:
    """How soon the programs of `kernels` can run: 0 where none is under way, else the latest
    time at which one of them started compiling (`time.monotonic`), or infinity where one
    waits for a compiling thread."""
    with _lock:
        under_way = [key for key in _compiling if key[0] in kernels]
        return max((_compile_started.get(key, math.inf) for key in under_way), default=0.0)


def first_pass_evaluations(problem: Problem, position: int, param_dynamic: Sequence[Any],
                           arg_dynamic: Sequence[Any]) -> int:
    """The evaluations of a full check's first pass over a leaf (the loss at θ, two points
    per entry), less those of entries it never reads (`evaluate` evaluates one of them)."""
    size = int(np.size(param_dynamic[position]))
    mask = unread_mask(problem, position, param_dynamic, arg_dynamic)
    unread = 0 if mask is None else int(np.count_nonzero(mask))
    return 2 * (size - unread) + 1 + (unread > 0)


def jobs_for(tasks: Sequence[Any]) -> list[progress.Job]:
    """One `Job` per leaf task of a full check (`first_pass_evaluations`: 2n+1, fewer where the
    loss never reads some entries); the leaves' programs (one for leaves that share it,
    `program_leaves`) start compiling here, side by side in the background."""
    requests: dict[Kernel, tuple[Kernel, Any, int]] = {}
    jobs = []
    seen: set[Kernel] = set()   # shared programs whose f(θ) one of their leaves evaluates
    _compile_outputs_ahead(tasks)
    for t, plan in zip(tasks, output_plans(tasks)):
        if plan is not None:
            jobs.append(_outputs_job(t, plan, requests))
            continue
        kernel, _ = entry_kernel(t.problem, t.position, t.param_dynamic, t.arg_dynamic)
        shared = (t.param_dynamic, t.arg_dynamic)
        points = first_pass_evaluations(t.problem, t.position, t.param_dynamic, t.arg_dynamic)
        program = shared_program(t.problem, t.position, t.param_dynamic, t.arg_dynamic)
        if program is not None and np.size(t.param_dynamic[t.position]) > 0:
            if program in seen:   # its f(θ) is another leaf's (`numerics.full.first_passes`)
                points -= 1
            seen.add(program)
        size = batch_size(kernel, shared, points, t.batch_size)
        if kernel not in requests or requests[kernel][2] < size:
            # a shared program: batches for its largest leaf serve the others too (`_larger`)
            requests[kernel] = (kernel, shared, size)
        plan = example_plan(t.problem, t.position, t.param_dynamic, t.arg_dynamic)
        if plan is not None:
            few, few_size = _examples_request(plan, t.problem, t.position, t.param_dynamic,
                                              t.arg_dynamic, size)
            requests[few] = (few, shared, few_size)
        jobs.append(progress.Job(points, lambda t=t, points=points: seconds_per_evaluation(
            t.problem, t.position, t.param_dynamic, t.arg_dynamic, points, t.batch_size)))
    # the longest compilations first: the threads then finish together (the followed
    # paths' programs hold the loss at θ beside the changes, twice its equations)
    compile_ahead(list(requests.values()), longest_first=True)
    return jobs


def _compile_estimate(kernel: Kernel, shared: Any) -> float:
    """A rough measure of a kernel's program to compile: the loss's equations, twice where a
    change is followed through them (its program holds the loss at θ beside the changes)."""
    problem = getattr(kernel, "problem", None)
    if not isinstance(problem, Problem):
        return 0.0
    closed = loss_jaxpr(problem, *shared)
    equations = 1.0 if closed is None else float(sum(1 for _ in _jaxpr.equations(closed.jaxpr)))
    follows = isinstance(kernel, EntryLoss) and (
        kernel.examples or traced_loss(problem, kernel.position, *shared) is not None)
    return equations * (2.0 if follows else 1.0)


def _output_dynamic(plan: product_outputs.Plan, param_dynamic: Sequence[Any],
                    use: int) -> tuple[Any, ...]:
    """The params of a value's problem, with zeros for the value: what is decided and
    compiled from its shapes (the loss's params themselves: the indices they hold choose)."""
    return (*param_dynamic, plan.placeholders[use])


def _outputs_job(t: Any, plan: product_outputs.Plan,
                 requests: dict[Kernel, tuple[Kernel, Any, int]]) -> progress.Job:
    """`jobs_for`'s job for a leaf whose first pass goes through the values its uses reach:
    each value's points (once, for whichever leaf reaches it first), its program requested;
    timed on its first value."""
    n, points, timed = len(t.param_dynamic), 0, []
    for k, out_problem in enumerate(plan.problems):
        dynamic = _output_dynamic(plan, t.param_dynamic, k)
        kernel, _ = entry_kernel(out_problem, n, dynamic, t.arg_dynamic)
        count = first_pass_evaluations(out_problem, n, dynamic, t.arg_dynamic)
        timed.append((out_problem, dynamic, count))
        if kernel not in requests:
            requests[kernel] = (kernel, (dynamic, t.arg_dynamic),
                                batch_size(kernel, (dynamic, t.arg_dynamic), count,
                                           t.batch_size))
            points += count
    out_problem, dynamic, count = timed[0]
    return progress.Job(points, lambda: seconds_per_evaluation(
        out_problem, n, dynamic, t.arg_dynamic, count, t.batch_size))
