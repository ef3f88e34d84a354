"""Gradient health over training steps: per-leaf norms, update/parameter ratios, flags.

A gradient check says whether a gradient is *correct*; health says whether a correct (or not)
gradient is *useful* for training: not vanishing, not exploding, not dead, and moving the
parameters by a sensible fraction of their size per step.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from ..report.text import table

VANISHING, EXPLODING, DEAD = "vanishing", "exploding", "dead"
SMALL_UPDATES, LARGE_UPDATES = "small_updates", "large_updates"


@dataclasses.dataclass(frozen=True)
class Flag:
    """One diagnosis: its `kind` (`"vanishing"`, `"exploding"`, `"dead"`, `"small_updates"`,
    `"large_updates"`), the leaf's `path` and a one-line `message` with the numbers."""

    kind: str
    path: str
    message: str


@dataclasses.dataclass(frozen=True, eq=False)
class LeafHealth:
    """Per-leaf series over steps (arrays of length `steps`; NaN where undefined).

    - `grad_norm`, `grad_rms`: ‖g‖ and ‖g‖/√size at each step.
    - `update_ratio`: ‖update‖/‖param‖ at each step (`None` without params and updates).
    - `units`: the number of units (the leaf's size along the unit axis; 1 for a scalar).
    - `dead_units`: indices along the unit axis whose gradient was exactly zero at every step.
    """

    path: str
    shape: tuple[int, ...]
    units: int
    grad_norm: np.ndarray
    grad_rms: np.ndarray
    update_ratio: np.ndarray | None
    dead_units: tuple[int, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class Health:
    """What `jaxcheck.health` found: `leaves` (a `LeafHealth` each), `flags` and `steps`.

    `ok` is True when nothing was flagged; `str(health)` prints a table and the flags.
    """

    steps: int
    leaves: tuple[LeafHealth, ...]
    flags: tuple[Flag, ...]

    @property
    def ok(self) -> bool:
        return not self.flags

    def flagged(self, kind: str) -> tuple[str, ...]:
        """Paths of the leaves flagged with `kind`, in tree order."""
        return tuple(f.path for f in self.flags if f.kind == kind)

    def leaf(self, path: str) -> LeafHealth:
        """The `LeafHealth` whose path is `path` (e.g. `"['W1']"`)."""
        for leaf in self.leaves:
            if leaf.path == path:
                return leaf
        raise KeyError(f"no leaf with path {path!r}; paths: {[x.path for x in self.leaves]}")

    def __str__(self) -> str:
        return _render(self)


def health(grads: Any, params: Any = None, updates: Any = None, *, stacked: bool = False,
           unit_axis: int = -1, vanishing: float = 1e-4, exploding: float = 1e3,
           update_ratio: tuple[float, float] = (1e-5, 1e-1)) -> Health:
    """Diagnose gradients over training steps: vanishing, exploding, dead units, and updates
    that are too small or too large for the parameters they change.

    **Arguments:**

    - `grads`: one gradient pytree (one step), or a history: a Python `list` of gradient
      pytrees, one per step. (A single gradient whose top level is a list must be wrapped,
      `[grads]`.) With `stacked=True`, one pytree whose leaves have a leading step axis, as
      `jax.lax.scan` returns them.
    - `params`: optional, the parameters at those steps, in the same form (a single pytree is
      used for every step). With a history of parameters and no `updates`, the updates are
      taken as the differences of consecutive parameters.
    - `updates`: optional, the updates applied at those steps (e.g. optax's `updates`).
    - `stacked`: read leading axes of `grads`, `params` and `updates` as steps.
    - `unit_axis`: the axis of a leaf that indexes units (default -1: the output axis of a
      `(in, out)` kernel, the entries of a bias).
    - `vanishing`: flag a leaf whose gradient RMS is below this fraction of the largest leaf's
      RMS at the same step (median over steps; that RMS capped at `exploding`). Default 1e-4.
    - `exploding`: flag a leaf whose gradient is non-finite at some step, or whose gradient RMS
      exceeds this value (for a loss of order 1) at some step. Default 1e3.
    - `update_ratio`: `(low, high)`: flag a leaf whose median ‖update‖/‖param‖ is below `low`
      (it barely moves) or above `high` (it is being overwritten). Default `(1e-5, 1e-1)`,
      two orders of magnitude either side of the usual ~1e-3 (CS231n notes, "Babysitting the
      learning process").

    A unit (a slice along `unit_axis`) whose gradient is exactly zero at every step is dead:
    e.g. a ReLU unit that is never active on the data. An L2 penalty makes its gradient
    nonzero; pass the gradient of the data loss to see dead units.

    **Returns:** a frozen `jaxcheck.Health`.

    **Example:**

    ```python
    >>> import jax, jax.numpy as jnp, jaxcheck
    >>> def loss(p, x):                     # unit 1 has a bias so negative it never fires
    ...     return jnp.sum(jax.nn.relu(x @ p["W"] + p["b"]) ** 2)
    >>> p = {"W": jnp.ones((2, 3)), "b": jnp.array([0.0, -10.0, 0.0])}
    >>> x = jnp.array([[1.0, 2.0], [0.5, -1.0]])
    >>> h = jaxcheck.health([jax.grad(loss)(p, x), jax.grad(loss)(p, 2 * x)])
    >>> h.flagged("dead"), h.leaf("['W']").dead_units
    (("['W']", "['b']"), (1,))

    ```
    """
    if not isinstance(stacked, bool):
        raise TypeError(f"stacked: expected a bool, got {stacked!r}")
    for name, value in (("vanishing", vanishing), ("exploding", exploding)):
        if not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"{name}: expected a positive float, got {value!r}")
    low, high = _pair(update_ratio)
    g_steps, paths = _history(grads, stacked, "grads")
    n = len(g_steps)
    p_steps = None if params is None else _history(params, stacked, "params", paths)[0]
    u_steps = None if updates is None else _history(updates, stacked, "updates", paths)[0]
    ratios = _update_ratios(p_steps, u_steps, n)

    leaves = []
    for k, path in enumerate(paths):
        g = np.stack([np.asarray(step[k], dtype=np.float64) for step in g_steps])
        flat = g.reshape(n, -1)
        with np.errstate(invalid="ignore", over="ignore"):
            norm = np.linalg.norm(flat, axis=1)
        axis = _unit_axis(g, unit_axis, path)
        leaves.append(LeafHealth(
            path, tuple(g.shape[1:]), 1 if axis is None else g.shape[axis], norm,
            norm / np.sqrt(max(flat.shape[1], 1)), None if ratios is None else ratios[:, k],
            _dead_units(g, axis)))
    flags = _flags(leaves, vanishing, exploding, low, high)
    return Health(n, tuple(leaves), tuple(flags))


def _pair(update_ratio: Any) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in update_ratio)
    except (TypeError, ValueError):
        low = high = float("nan")
    if not 0 < low < high:
        raise ValueError(f"update_ratio: expected a pair (low, high) with 0 < low < high, "
                         f"got {update_ratio!r}")
    return low, high


def _history(tree: Any, stacked: bool, name: str,
             paths: Sequence[str] | None = None) -> tuple[list[list[Any]], tuple[str, ...]]:
    """Steps as lists of floating leaves (tree order) and the leaves' paths."""
    if stacked:
        with_paths, _ = jax.tree_util.tree_flatten_with_path(tree)
        found = [(jax.tree_util.keystr(k), np.asarray(v)) for k, v in with_paths
                 if _is_float(v)]
        lengths = {v.shape[0] if v.ndim else None for _, v in found}
        if len(lengths) != 1 or None in lengths:
            raise ValueError(f"{name}: with stacked=True, expected floating leaves with one "
                             f"common leading step axis; got leading sizes "
                             f"{sorted(map(str, lengths))}")
        count = lengths.pop()
        assert count is not None  # excluded above
        steps = [[v[t] for _, v in found] for t in range(count)]
        got = tuple(p for p, _ in found)
    else:
        trees = tree if isinstance(tree, list) else [tree]
        if not trees:
            raise ValueError(f"{name}: expected a pytree or a non-empty list of pytrees, got []")
        steps, got = [], None
        for t, step in enumerate(trees):
            with_paths, _ = jax.tree_util.tree_flatten_with_path(step)
            these = tuple(jax.tree_util.keystr(k) for k, v in with_paths if _is_float(v))
            if got is not None and these != got:
                raise ValueError(f"{name}: a list is read as a history of steps, but step {t} "
                                 f"has floating leaves {list(these)}, expected those of step 0, "
                                 f"{list(got)}. For one tree whose top level is a list, pass "
                                 f"[{name}].")
            got = these
            steps.append([v for _, v in with_paths if _is_float(v)])
    if not got:
        raise ValueError(f"{name}: expected at least one floating-point array leaf")
    if paths is not None and got != tuple(paths):
        raise ValueError(f"{name}: expected the floating leaves of grads, {list(paths)}; "
                         f"got {list(got)}")
    return steps, got


def _is_float(x: Any) -> bool:
    return hasattr(x, "dtype") and np.issubdtype(np.dtype(x.dtype), np.floating)


def _update_ratios(p_steps: list | None, u_steps: list | None,
                   n: int) -> np.ndarray | None:
    """‖u‖/‖p‖ per step and leaf, shape (n, leaves); NaN where ‖p‖ = 0 or undefined."""
    if p_steps is None or (len(p_steps) == 1 and u_steps is None):
        return None                     # one set of parameters and no updates: nothing moved
    if len(p_steps) not in (1, n, n + 1):
        raise ValueError(f"params: expected 1, {n} or {n + 1} steps to go with {n} steps of "
                         f"grads, got {len(p_steps)}")
    if u_steps is not None and len(u_steps) != n:
        raise ValueError(f"updates: expected {n} steps to go with the grads, got {len(u_steps)}")
    if len(p_steps) == 1:
        p_steps = p_steps * n
    if u_steps is None:
        # Consecutive parameters give the update of every step but the last one.
        u_steps = [[b - a for a, b in zip(p0, p1)] for p0, p1 in zip(p_steps, p_steps[1:])]
    leaves = len(p_steps[0])
    out = np.full((n, leaves), np.nan)
    for t in range(min(n, len(p_steps), len(u_steps))):
        for k in range(leaves):
            p = np.linalg.norm(np.asarray(p_steps[t][k], dtype=np.float64))
            if p > 0:
                out[t, k] = np.linalg.norm(np.asarray(u_steps[t][k], dtype=np.float64)) / p
    return out


def _unit_axis(g: np.ndarray, unit_axis: int, path: str) -> int | None:
    """The axis of `g` (steps first) that indexes units; None for a scalar leaf."""
    if g.ndim == 1:
        return None
    if not -(g.ndim - 1) <= unit_axis < g.ndim - 1:
        raise ValueError(f"unit_axis: {unit_axis} is out of range for leaf {path} of shape "
                         f"{g.shape[1:]}")
    return unit_axis % (g.ndim - 1) + 1


def _dead_units(g: np.ndarray, axis: int | None) -> tuple[int, ...]:
    """Units (slices along `axis`) with a zero gradient at every step."""
    if axis is None:                    # a scalar leaf: the leaf is its only unit
        return (0,) if not np.any(g) else ()
    alive = np.any(np.moveaxis(g, axis, -1).reshape(-1, g.shape[axis]) != 0, axis=0)
    return tuple(int(i) for i in np.flatnonzero(~alive))


def _flags(leaves: list[LeafHealth], vanishing: float, exploding: float,
           low: float, high: float) -> list[Flag]:
    rms = np.stack([leaf.grad_rms for leaf in leaves], axis=1)      # (steps, leaves)
    finite = np.where(np.isfinite(rms), rms, 0.0)
    # Capped at `exploding`, so that the leaves of an exploding network are not "vanishing".
    largest = np.minimum(finite.max(axis=1, keepdims=True), exploding)
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = np.median(np.where(largest > 0, finite / largest, np.nan), axis=0)
    biggest = leaves[int(np.argmax(np.median(finite, axis=0)))].path
    flags = []
    for k, leaf in enumerate(leaves):
        bad = ~np.isfinite(leaf.grad_norm)
        if bad.any():
            flags.append(Flag(EXPLODING, leaf.path, f"non-finite gradient at {int(bad.sum())} "
                              f"of {len(bad)} steps (first at step {int(np.argmax(bad))})"))
        elif np.max(leaf.grad_rms) > exploding:
            t = int(np.argmax(leaf.grad_rms))
            flags.append(Flag(EXPLODING, leaf.path, f"gradient RMS {leaf.grad_rms[t]:.1e} at "
                              f"step {t} exceeds {exploding:.0e}"))
        if np.isfinite(relative[k]) and 0 < relative[k] < vanishing:
            flags.append(Flag(VANISHING, leaf.path, f"gradient RMS {np.median(finite[:, k]):.1e}"
                              f" is {relative[k]:.1e} of the largest leaf's ({biggest})"))
        if leaf.dead_units:
            which = ("every unit" if len(leaf.dead_units) == leaf.units else
                     f"{len(leaf.dead_units)} of {leaf.units} units: {_short(leaf.dead_units)}")
            flags.append(Flag(DEAD, leaf.path, f"zero gradient at every step for {which}"))
        if leaf.update_ratio is not None and np.isfinite(leaf.update_ratio).any():
            r = float(np.nanmedian(leaf.update_ratio))
            if r < low:
                flags.append(Flag(SMALL_UPDATES, leaf.path, f"median update/param ratio {r:.1e} "
                                  f"< {low:.0e}: the leaf barely moves"))
            elif r > high:
                flags.append(Flag(LARGE_UPDATES, leaf.path, f"median update/param ratio {r:.1e} "
                                  f"> {high:.0e}: each step rewrites the leaf"))
    return flags


def _short(indices: tuple[int, ...], limit: int = 8) -> str:
    shown = ", ".join(map(str, indices[:limit]))
    return f"[{shown}{', ...' if len(indices) > limit else ''}]"


def _render(h: Health) -> str:
    kinds = sorted({f.kind for f in h.flags})
    head = (f"jaxcheck.health: {len(h.flags)} flag(s) over {h.steps} step(s): {', '.join(kinds)}"
            if h.flags else f"jaxcheck.health: OK - nothing flagged over {h.steps} step(s)")
    rows = [["leaf", "shape", "|grad| first", "|grad| last", "rms (median)", "update/param",
             "dead units"]]
    for leaf in h.leaves:
        ratio = ("-" if leaf.update_ratio is None or not np.isfinite(leaf.update_ratio).any()
                 else f"{np.nanmedian(leaf.update_ratio):.1e}")
        rows.append([leaf.path, str(leaf.shape), f"{leaf.grad_norm[0]:.1e}",
                     f"{leaf.grad_norm[-1]:.1e}", f"{np.median(leaf.grad_rms):.1e}", ratio,
                     str(len(leaf.dead_units))])
    lines = [head, ""] + table(rows, right={2, 3, 4, 5, 6})
    if h.flags:
        lines += ["", "flags:"]
        kind_w = max(len(f.kind) for f in h.flags)
        path_w = max(len(f.path) for f in h.flags)
        lines += [f"  {f.kind.ljust(kind_w)}  {f.path.ljust(path_w)}  {f.message}"
                  for f in h.flags]
    return "\n".join(lines)
