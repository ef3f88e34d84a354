"""Entries of a leaf that the loss never reads: moving one cannot change the loss.

An embedding table is read by a gather at the batch's tokens; a table of positions may be
sliced to the sequence's length. An entry outside every row the batch gathers and every slice
leaves each operation of the loss with the same operands, so the loss with that entry moved
is the loss at θ, exactly as the program computes it. `engine.evaluate` evaluates one such
point per call and gives its value to the others: a full check of a language model's
embedding table costs the rows its batch reads, not its whole vocabulary.

Which rows a gather reads is data. The leaf's uses are found in the loss's jaxpr once per
shapes (`reads_of`): gathers (`table[tokens]`, `jnp.take`, a vmapped `table[i]`), slices and
dynamic slices; the indices they read at, which must not depend on the leaf, are computed from
the concrete inputs at every call (`unread`), by the equations they need and no others. A row
counts as read whole where any index starts in it (a superset of what is read). A leaf with any
other use (a product, a norm, a regulariser, a tied output layer), a gather with batching axes,
or indices that are not concrete here (traced, or spread over several processes) has every
entry read: nothing is skipped.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.core
import numpy as np

from .. import _jaxpr


@dataclasses.dataclass(frozen=True, eq=False)
class Reads:
    """How one jaxpr (the loss's, or a call's body) reads the leaf: `steps`, the equations
    that compute the indices, in order (with the `Reads` of a call whose body reads the leaf),
    then `reads`, the gathers, slices and dynamic slices of the leaf itself."""

    jaxpr: Any
    consts: Sequence[Any]
    steps: tuple[tuple[Any, Reads | None], ...]
    reads: tuple[Any, ...]
    needed_in: tuple[bool, ...]      # the inputs the steps read

    @property
    def any(self) -> bool:
        return bool(self.reads) or any(sub is not None for _, sub in self.steps)


def _row_gather(eqn: Any) -> bool:
    """A gather whose rows (leading axis) are read from its indices alone: an embedding
    lookup, `take`, a vmapped `table[i]` (no batching axes shared with the indices)."""
    return not tuple(eqn.params["dimension_numbers"].operand_batching_dims)


def reads_of(jaxpr: Any, consts: Sequence[Any], leaf_in: Sequence[bool],
             other_uses: bool = False) -> Reads | None:
    """How `jaxpr` reads the inputs flagged in `leaf_in` (one leaf), or None where it reads
    them otherwise than by gathers, slices and dynamic slices at indices that do not depend on
    the leaf (every entry then counts as read). With `other_uses`, other uses of the leaf (a
    product, a tied output layer) are allowed and left out: the gathers and slices alone."""
    aliases = {v for v, flag in zip(jaxpr.invars, leaf_in) if flag}
    derived = set(aliases)   # values computed from the leaf
    reads, calls = [], {}
    for eqn in jaxpr.eqns:
        hit = [_jaxpr.is_var(v) and v in aliases for v in eqn.invars]
        if not any(hit):
            if any(_jaxpr.is_var(v) and v in derived for v in eqn.invars):
                derived.update(v for v in eqn.outvars if _jaxpr.is_var(v))
            continue
        kind = _jaxpr.name(eqn)
        derived.update(v for v in eqn.outvars if _jaxpr.is_var(v))
        if kind == _jaxpr.CONVERT:     # the same entries, in another dtype
            aliases.add(eqn.outvars[0])
        elif kind == _jaxpr.GATHER and hit == [True, False] and _row_gather(eqn):
            reads.append(eqn)
        elif kind == _jaxpr.SLICE or (kind == _jaxpr.DYNAMIC_SLICE and not any(hit[1:])):
            reads.append(eqn)
        else:
            body = _jaxpr.call_body(eqn)
            sub = None if body is None else reads_of(body[0], body[1], hit, other_uses)
            if sub is not None:
                calls[id(eqn)] = sub
            elif body is not None or not other_uses:
                return None   # a call reading the leaf at indices computed from it
    if any(_jaxpr.is_var(v) and v in aliases for v in jaxpr.outvars) and not other_uses:
        return None
    # the equations the indices need, found backwards
    needed = {v for eqn in reads for v in eqn.invars[1:] if _jaxpr.is_var(v)}
    steps: list[tuple[Any, Reads | None]] = []
    read_ids = {id(eqn) for eqn in reads}
    for eqn in reversed(jaxpr.eqns):
        sub = calls.get(id(eqn))
        if sub is not None:
            if sub.any:
                steps.append((eqn, sub))
                needed.update(v for v, n in zip(eqn.invars, sub.needed_in)
                              if n and _jaxpr.is_var(v))
        elif id(eqn) not in read_ids and any(_jaxpr.is_var(v) and v in needed for v in eqn.outvars):
            steps.append((eqn, None))
            needed.update(v for v in eqn.invars if _jaxpr.is_var(v))
    if needed & derived:
        return None   # indices computed from the leaf itself
    steps.reverse()
    return Reads(jaxpr, tuple(consts), tuple(steps), tuple(reads),
                 tuple(v in needed for v in jaxpr.invars))


def _mark(eqn: Any, args: Sequence[Any], read: np.ndarray) -> None:
    """Mark in `read` (the leaf's shape) what the gather, slice or dynamic slice `eqn`
    reads."""
    if _jaxpr.name(eqn) == _jaxpr.SLICE:
        box = tuple(slice(s, e) for s, e in zip(eqn.params["start_indices"],
                                                 eqn.params["limit_indices"]))
        read[box] = True
        return
    # the rows from each index's start on the leading axis (0 where it has none), with every
    # entry of them: a superset of what the slices read
    rows, size = read.shape[0], int(eqn.params["slice_sizes"][0])
    if _jaxpr.name(eqn) == _jaxpr.DYNAMIC_SLICE:
        starts = np.asarray(args[1], np.int64).reshape(1)
    else:
        axes = list(eqn.params["dimension_numbers"].start_index_map)
        indices = np.asarray(args[1]).astype(np.int64)
        starts = (indices.reshape(-1, indices.shape[-1])[:, axes.index(0)] if 0 in axes
                  else np.zeros(1, np.int64))
    # clamped as XLA clamps out-of-range starts (a dropped one reads less, never more)
    starts = np.clip(starts, 0, max(rows - size, 0))
    hit = np.zeros(rows + 1, np.int64)
    np.add.at(hit, starts, 1)
    np.add.at(hit, np.minimum(starts + size, rows), -1)
    read[np.cumsum(hit[:rows]) > 0] = True


def _evaluate(reads: Reads, invals: Sequence[Any],
              visit: Callable[[Any, Sequence[Any]], None]) -> None:
    """Compute the indices of every read of `reads` from `invals`; `visit(eqn, args)` each
    read (its args: None for the leaf, then the concrete indices)."""
    env: dict = {}

    def value(v):
        return v.val if _jaxpr.is_literal(v) else env.get(v)

    env.update(zip(reads.jaxpr.constvars, reads.consts))
    env.update((v, x) for v, x, n in zip(reads.jaxpr.invars, invals, reads.needed_in) if n)
    for eqn, sub in reads.steps:
        args = [value(v) for v in eqn.invars]
        if sub is not None:
            _evaluate(sub, args, visit)
            continue
        out = _on_host(eqn, args)
        if out is None:
            out = _jaxpr.bind(eqn, args)
        env.update(zip(eqn.outvars, out if _jaxpr.multiple_results(eqn) else [out]))
    for eqn in reads.reads:
        visit(eqn, [None] + [value(v) for v in eqn.invars[1:]])


# The equations before a gather are a few integer operations on the batch's tokens (negative
# indices wrapped, a cast, a broadcast). Bound one by one, each would be compiled for a single
# use (~40 ms apiece on a CPU); these are evaluated by NumPy, with XLA's integer semantics
# (wrapping arithmetic, casts that keep the low bits). Anything else, or another dtype, is bound.
_HOST_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "max": np.maximum,
                "min": np.minimum, "lt": np.less, "le": np.less_equal, "gt": np.greater,
                "ge": np.greater_equal, "eq": np.equal, "ne": np.not_equal,
                "and": np.bitwise_and, "or": np.bitwise_or}


def _on_host(eqn: Any, args: Sequence[Any]) -> np.ndarray | None:
    """`eqn` applied to `args` by NumPy where it is one of the integer and boolean operations
    above; None otherwise."""
    avals = [v.aval for v in eqn.outvars]
    if len(avals) != 1 or any(not _integral(v.aval.dtype) for v in [*eqn.outvars, *eqn.invars]):
        return None
    name, params, out = _jaxpr.name(eqn), eqn.params, avals[0]
    x = [np.asarray(a) for a in args]
    with np.errstate(all="ignore"):
        if name in _HOST_BINARY and len(x) == 2:
            y = _HOST_BINARY[name](x[0], x[1])
        elif name == "neg":
            y = np.negative(x[0])
        elif name == "not":
            y = np.invert(x[0])
        elif name == "select_n":
            y = np.choose(x[0].astype(np.int64), x[1:])
        elif name == "clamp":
            y = np.minimum(np.maximum(x[1], x[0]), x[2])
        elif name == "convert_element_type":
            y = x[0]
        elif name == "broadcast_in_dim":
            kept = [1] * len(out.shape)
            for axis, k in zip(params["broadcast_dimensions"], x[0].shape):
                kept[axis] = k
            y = np.broadcast_to(x[0].reshape(kept), out.shape)
        elif name == "squeeze" or (name == "reshape" and params.get("dimensions") is None):
            y = x[0].reshape(out.shape)
        elif name == "concatenate":
            y = np.concatenate(x, axis=params["dimension"])
        else:
            return None
    if tuple(np.shape(y)) != tuple(out.shape):
        return None
    return np.asarray(y).astype(out.dtype)


def _integral(dtype: Any) -> bool:
    try:
        return np.issubdtype(np.dtype(dtype), np.integer) or np.dtype(dtype) == np.bool_
    except TypeError:   # JAX's extended dtypes (PRNG keys)
        return False


def unread(reads: Reads, invals: Sequence[Any], shape: tuple[int, ...]) -> np.ndarray | None:
    """A mask of the leaf's entries (shape `shape`) that no gather or slice reads, computed
    from the loss's concrete inputs `invals`; None where they are not concrete."""
    needed = [x for x, n in zip(invals, reads.needed_in) if n]
    if any(not _concrete(x) for x in needed):
        return None
    read = np.zeros(shape, bool)
    try:
        _evaluate(reads, invals, lambda eqn, args: _mark(eqn, args, read))
    except Exception:  # an input spread over processes, an operation that needs a trace
        return None
    return ~read


def example_rows(eqn: Any) -> int | None:
    """For a gather of whole rows of the leaf (`table[tokens]`: its leading axis indexed,
    one row per index), where in its indices the row number sits; else None. The indices'
    leading axis is then the output's first batch axis: the examples of a batch."""
    dn = eqn.params["dimension_numbers"]
    if (_jaxpr.name(eqn) != _jaxpr.GATHER or not _row_gather(eqn)
            or 0 not in dn.start_index_map or 0 not in dn.collapsed_slice_dims
            or len(eqn.invars[1].aval.shape) < 2):
        return None
    return list(dn.start_index_map).index(0)


def examples_reaching_rows(reads: Reads, invals: Sequence[Any],
                           rows: int) -> np.ndarray | None:
    """Which examples read each row of the leaf, as a (rows, examples) mask, computed from
    the loss's concrete inputs: where the leaf is read by one gather of whole rows
    (`example_rows`), its examples the indices' leading axis; None otherwise. An index
    counts at its row clamped into the table (a superset of what is read)."""
    found: list = []
    needed = [x for x, n in zip(invals, reads.needed_in) if n]
    if any(not _concrete(x) for x in needed):
        return None
    try:
        _evaluate(reads, invals, lambda eqn, args: found.append((eqn, args[1])))
    except Exception:
        return None
    if len(found) != 1 or example_rows(found[0][0]) is None:
        return None
    eqn, indices = found[0]
    indices = np.asarray(indices).astype(np.int64)
    at = np.clip(indices[..., example_rows(eqn)], 0, rows - 1).reshape(indices.shape[0], -1)
    reached = np.zeros((rows, at.shape[0]), bool)
    reached[at, np.arange(at.shape[0])[:, None]] = True
    return reached


def _concrete(x: Any) -> bool:
    if isinstance(x, jax.core.Tracer):
        return False
    return not isinstance(x, jax.Array) or x.is_fully_addressable
