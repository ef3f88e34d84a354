"""`check_jacobian`: the full Jacobian of a vector- or tree-valued function, entry by entry.

Column j of the Jacobian is one central difference: component j of one input leaf is moved
by ±h and the whole output tree is evaluated (2 evaluations per column, batched like
`engine`). Each entry (output i, input j) then gets the verdict of the scalar check, from the
same functions (`verdicts.screen`, then `verdicts.judge` at Richardson levels for the
entries not yet within round-off), with the round-off scale of that entry being the output
entry's own magnitude |fᵢ| rather than a scalar loss's.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from .._errors import ForwardModeUnavailable
from ..evaluation.analytic_jacobian import Source, analytic_jacobian
from ..evaluation.outputs import evaluate_outputs, output_batch_size
from ..inputs.callables import keyed
from ..inputs.complex_params import is_complex, real_view_function
from ..inputs.options import Options, parse_options
from ..inputs.precision import (
    PrecisionChoice,
    choose_precision,
    effective_epsilon,
    machine_epsilon,
    working_precision,
)
from ..inputs.prepare import on_one_mesh, working_copies
from ..inputs.pytree import Split, is_checkable, split
from ..inputs.vector_problem import VectorProblem, with_layout
from ..numerics import differences as d
from ..numerics import verdicts as v
from ..report.jacobian import JacobianBlock, JacobianReport, entry_name, locate

AD_MODES = ("rev", "fwd", "both")


def check_jacobian(fn: Callable[..., Any], primals: Any, *args: Any,
                   jac_fn: Callable[..., Any] | None = None,
                   vjp_fn: Callable[..., Any] | None = None,
                   jvp_fn: Callable[..., Any] | None = None,
                   ad: str | None = None, **options: Any) -> JacobianReport:
    """Check the Jacobian of `fn(primals, *args)` (any pytree of arrays) entry by entry.

    Each entry ∂ output[i] / ∂ primals[j] of every (output leaf, input leaf) block gets a
    verdict (PASS, FAIL, or INCONCLUSIVE at a kink) from a central difference of the whole
    output along input component j, with the error model of `jaxcheck.check`.

    **Arguments:**

    - `fn`: `fn(primals, *args)` returning an array or a pytree of arrays. Integer and bool
      outputs are not compared.
    - `primals`: any pytree; its floating (real or complex) leaves are differentiated.
    - `*args`: further arguments of `fn`, not differentiated.
    - `jac_fn`: a Jacobian under test, `jac_fn(primals, *args)` in the layout of
      `jax.jacrev(fn)` (output tree, then a tree like `primals` with leaves of shape
      `output_shape + input_shape`); real leaves only.
    - `vjp_fn`: a VJP under test, `vjp_fn(primals, cotangents, *args)` returning a tree like
      `primals` (JAX's convention for complex leaves, as `jax.vjp`).
    - `jvp_fn`: a JVP under test, `jvp_fn(primals, tangents, *args)` returning output
      tangents (`tangents` is zero in leaves that are not differentiated).
    - `ad`: without a user function, which of JAX's modes is checked: `"rev"` (`jax.vjp`,
      as `jax.jacrev`), `"fwd"` (`jax.jvp`, as `jax.jacfwd`) or `"both"` (default). Forward
      mode of a `jax.custom_vjp` function is impossible; it is skipped with a note in
      `report.notes`, and reverse mode is still checked.
    - `**options`: as for `jaxcheck.check` (`eps`, `safety`, `batch_size`, `precision`, ...).

    **Returns:** a `jaxcheck.JacobianReport`; `report.ok` is False iff some entry FAILs, and
    each failure names (output path, output index, input path, input index).

    **Example:**

    ```python
    >>> import jax, jax.numpy as jnp, jaxcheck
    >>> f = lambda p: {"y": jnp.sin(p["w"]) * p["b"], "s": jnp.sum(p["w"] ** 2)}
    >>> primals = {"w": jnp.array([0.5, 1.0]), "b": jnp.array(2.0)}
    >>> jaxcheck.check_jacobian(f, primals).ok
    True
    >>> def wrong_jvp(p, t):                      # forgets the product rule for "b"
    ...     return {"y": jnp.cos(p["w"]) * t["w"] * p["b"], "s": 2 * jnp.sum(p["w"] * t["w"])}
    >>> report = jaxcheck.check_jacobian(f, primals, jvp_fn=wrong_jvp)
    >>> [f.location for f in report.failures]
    ["out['y'][0] wrt ['b']", "out['y'][1] wrt ['b']"]

    ```
    """
    opts = parse_options(options)
    if not callable(fn):
        raise TypeError(f"fn: expected a callable fn(primals, *args), got {type(fn).__name__}")
    for name, value in (("jac_fn", jac_fn), ("vjp_fn", vjp_fn), ("jvp_fn", jvp_fn)):
        if value is not None and not callable(value):
            raise TypeError(f"{name}: expected a callable or None, got {type(value).__name__}")
    fn, jac_fn, vjp_fn, jvp_fn = keyed(fn), keyed(jac_fn), keyed(vjp_fn), keyed(jvp_fn)
    sources = _sources(jac_fn, vjp_fn, jvp_fn, ad)
    _require_first_order_full(opts)
    input_complex = _checked_complex_flags(primals)
    if jac_fn is not None and any(input_complex):
        raise ValueError("jac_fn: complex primals are not supported (a complex Jacobian "
                         "does not describe a non-holomorphic function); pass vjp_fn or jvp_fn")
    fn, primals, vjp_fn, jvp_fn = real_view_function(fn, primals, vjp_fn, jvp_fn)
    sources = [Source(s.name, {"vjp_fn": vjp_fn, "jvp_fn": jvp_fn}.get(s.name, s.user))
               for s in sources]
    p = split(primals)
    if not p.checked:
        raise ValueError("primals: expected a pytree with at least one floating-point array "
                         f"leaf to differentiate; got {jax.tree_util.tree_structure(primals)}")
    a = split(args, check_floats=False)
    precision = choose_precision(opts.precision, p.dynamic)  # as `check` ("auto" resolved)
    with working_precision(precision.used) as dtype:
        # the same working copies as `check` (bfloat16/float16 upcast under "native")
        p, a = on_one_mesh(working_copies(p, dtype), working_copies(a, dtype))
        problem = VectorProblem(fn, p.structure, a.structure, p.checked)
        return compare(problem, p, a, sources, opts, precision, input_complex, who="fn")


def _sources(jac_fn, vjp_fn, jvp_fn, ad: str | None) -> list[Source]:
    if ad is not None and ad not in AD_MODES:
        raise ValueError(f"ad: expected one of {AD_MODES} or None, got {ad!r}")
    user = [Source(name, f) for name, f in
            (("jac_fn", jac_fn), ("vjp_fn", vjp_fn), ("jvp_fn", jvp_fn)) if f is not None]
    if user and ad is not None:
        raise ValueError(f"ad: selects JAX's own mode when no jac_fn/vjp_fn/jvp_fn is given; "
                         f"got ad={ad!r} together with {[s.name for s in user]}")
    if user:
        return user
    return [Source(m) for m in {"rev": ("rev",), "fwd": ("fwd",)}.get(ad or "both",
                                                                          ("rev", "fwd"))]


def _require_first_order_full(opts: Options) -> None:
    if opts.order != 1:
        raise ValueError(f"order: check_jacobian checks first derivatives (order=1); got "
                         f"order={opts.order!r}. For second derivatives pass the gradient "
                         f"function as fn (e.g. jax.grad(loss)).")
    if opts.mode != "full" or opts.method != "central":
        raise NotImplementedError(f"check_jacobian: mode={opts.mode!r}, "
                                  f"method={opts.method!r} (only 'full', 'central')")


def _checked_complex_flags(primals: Any) -> tuple[bool, ...]:
    """Per differentiated leaf of `primals` (in order): is it complex?"""
    return tuple(is_complex(x) for x in jax.tree_util.tree_leaves(primals)
                 if is_complex(x) or is_checkable(x))


def compare(problem: VectorProblem, p: Split, a: Split, sources: Sequence[Source],
            opts: Options, precision: PrecisionChoice, input_complex: Sequence[bool], who: str,
            output_name: str = "out") -> JacobianReport:
    """Every analytic source against central differences of `problem`'s outputs (`p`, `a`
    already cast to the working precision `precision.used`)."""
    problem = with_layout(problem, p.dynamic, a.dynamic, who)
    if any(problem.layout.complex) and any(s.name == "jac_fn" for s in sources):
        raise ValueError("jac_fn: complex outputs are not supported; pass vjp_fn or jvp_fn")
    eps_work = max(machine_epsilon(x.dtype) for x in p.checked_values)
    eps_f = effective_epsilon(problem.outputs, p.dynamic, a.dynamic, default=eps_work)
    rel_step = opts.eps if opts.eps is not None else d.relative_step(eps_f, d.CENTRAL_EXPONENT)

    analytic, eps_g, notes = [], [], []
    for source in sources:
        try:
            analytic.append(analytic_jacobian(source, problem, p.dynamic, a.dynamic,
                                              opts.batch_size))
        except ForwardModeUnavailable:
            notes.append(f"forward mode ({source.name}) skipped: fn contains a "
                         f"jax.custom_vjp, which has no JVP rule; reverse mode is checked")
            continue
        eps_g.append(eps_f if source.user is None else _user_epsilon(
            source, problem, p, a, eps_work))
    kept = [s for s in sources if not _skipped(s, notes)]
    per_leaf = [
        _compare_leaf(problem, p, a, k, [j[k] for j in analytic], kept, eps_f, eps_g,
                      rel_step, opts)
        for k in range(len(p.checked))
    ]
    blocks = []  # ordered by source, then output leaf, then input leaf
    for s, source in enumerate(kept):
        by_input = []
        for k, (position, path, cplx) in enumerate(zip(p.checked, p.paths, input_complex)):
            shape = tuple(p.dynamic[position].shape)
            shape = shape[:-1] if cplx else shape
            by_input.append(_blocks(source.name, problem, path, shape, cplx, per_leaf[k][s],
                                    output_name))
        blocks += [b for per_output in zip(*by_input) for b in per_output]
    info = {"eps_f": eps_f, "eps_g": eps_g, "rel_step": rel_step, **precision.info(),
            "ad": [s.name for s in kept]}
    return JacobianReport(tuple(blocks), tuple(notes), info, opts.max_failures)


def _skipped(source: Source, notes: list[str]) -> bool:
    return any(note.startswith(f"forward mode ({source.name})") for note in notes)


def _user_epsilon(source: Source, problem: VectorProblem, p: Split, a: Split,
                  default: float) -> float:
    """Machine epsilon of the least precise value the user's function computes."""
    user = source.user
    assert user is not None, "called for the user's own functions only"

    def one(pd, ad):
        primals, args = problem.params.rebuild(pd), problem.args.rebuild(ad)
        if source.name == "vjp_fn":
            ones = np.ones(problem.layout.size, problem.layout.dtype)
            return user(primals, problem.layout.cotangent_tree(ones), *args)
        if source.name == "jvp_fn":
            return user(primals, primals, *args)
        return user(primals, *args)
    return effective_epsilon(one, p.dynamic, a.dynamic, default=default)


def _rounding(eps_g: float, G: np.ndarray) -> np.ndarray:
    """The analytic entries' own rounding: the scalar model per row (a VJP) and per column
    (a JVP) of the Jacobian, whichever is larger."""
    by_input = np.stack([v.analytic_rounding(eps_g, G[j]) for j in range(G.shape[0])])
    by_output = np.stack([v.analytic_rounding(eps_g, G[:, i]) for i in range(G.shape[1])], 1)
    return np.maximum(by_input, by_output)


def _compare_leaf(problem: VectorProblem, p: Split, a: Split, number: int,
                  jacobians: Sequence[np.ndarray], sources: Sequence[Source], eps_f: float,
                  eps_g: Sequence[float], rel_step: float,
                  opts: Options) -> list[tuple[np.ndarray, ...]]:
    """Per source: (analytic, numerical, tolerance, status), each (leaf size, output size)."""
    position = p.checked[number]
    leaf = p.dynamic[position]
    dtype = np.dtype(leaf.dtype)
    theta_w = np.asarray(leaf).reshape(-1)
    theta = theta_w.astype(np.float64)
    n = theta.size
    if n == 0:   # a 0-size leaf: no column to perturb, its blocks are empty
        return [(J.T, np.zeros(J.T.shape), np.zeros(J.T.shape), np.zeros(J.T.shape, np.int8))
                for J in jacobians]
    idx = np.arange(n, dtype=np.int64)
    # One batch size for both passes: one compiled program per leaf.
    batch = output_batch_size(problem, position, (tuple(p.dynamic), tuple(a.dynamic)), 2 * n + 1,
                              opts.batch_size)

    def run(indices, values):
        out = evaluate_outputs(problem, position, p.dynamic, a.dynamic, indices, values, batch)
        _require_finite(out, indices, values, leaf.shape, problem)
        return out

    # Pass 1: θ and θ ± h₁ along every component; each gives a whole column.
    plus, minus, hp, hm = d.perturbed_points(theta_w, d.component_steps(theta, rel_step), dtype)
    vals = run(np.concatenate([[0], idx, idx]), np.concatenate([theta_w[:1], plus, minus]))
    f0, fp, fm = vals[0], vals[1:n + 1], vals[n + 1:]
    results = []
    for J, eg in zip(jacobians, eps_g):
        G = J.T
        a_ = _rounding(eg, G)
        r = v.screen(G, fp, fm, hp[:, None], hm[:, None], f0[None, :], eps_f, a_, opts.safety)
        results.append([G, r.numerical.copy(), r.tolerance.copy(), r.status.copy(), a_])

    # Pass 2: Richardson levels for the columns that hold an entry not yet within round-off.
    todo = np.flatnonzero(np.any([np.any(r[3] != v.PASS, axis=1) for r in results], axis=0))
    if todo.size:
        rel2 = d.relative_step(eps_f, d.RICHARDSON_EXPONENT)
        base = d.component_steps(theta[todo], rel2)
        levels = [d.perturbed_points(theta_w[todo], base / 2.0**k, dtype)
                  for k in range(d.RICHARDSON_LEVELS)]
        values = np.concatenate([np.concatenate([lp, lm]) for lp, lm, _, _ in levels])
        out = run(np.tile(todo, 2 * d.RICHARDSON_LEVELS), values)
        out = out.reshape(d.RICHARDSON_LEVELS, 2, todo.size, -1)
        hp2 = np.stack([lv[2] for lv in levels])
        hm2 = np.stack([lv[3] for lv in levels])
        beside = d.component_steps(theta[todo], rel_step)
        for source, (G, numerical, tolerance, status, a_) in zip(sources, results):
            local, i = np.nonzero(status[todo] != v.PASS)
            j = todo[local]
            judged, kinks = v.judge(G[j, i], f0[i], out[:, 0, local, i], out[:, 1, local, i],
                                    hp2[:, local], hm2[:, local], eps_f, a_[j, i],
                                    opts.safety, beside[local])
            status[j, i], numerical[j, i], tolerance[j, i] = (
                judged.status, judged.numerical, judged.tolerance)
            confirmed = _confirmed_beside_kinks(source, problem, p, a, number, j, i, kinks,
                                                theta_w, dtype, opts)
            status[j[confirmed], i[confirmed]] = v.INCONCLUSIVE
    return [tuple(r[:4]) for r in results]


def _confirmed_beside_kinks(source: Source, problem: VectorProblem, p: Split, a: Split,
                            number: int, j: np.ndarray, i: np.ndarray, kinks: v.Kinks,
                            theta_w: np.ndarray, dtype: np.dtype, opts: Options) -> np.ndarray:
    """Mask of unresolved kinks where the analytic Jacobian just beside θ (on either side,
    along component j) matches the one-sided slopes, as in the scalar check (`full`)."""
    confirmed = np.zeros(kinks.unresolved.shape, bool)
    where = np.flatnonzero(kinks.unresolved)
    if where.size == 0:
        return confirmed
    position = p.checked[number]
    leaf = p.dynamic[position]
    sides = {}
    for column in np.unique(j[where]):
        k = where[j[where] == column]
        step = np.full(1, kinks.step[k].max())
        plus, minus, _, _ = d.perturbed_points(theta_w[column:column + 1], step, dtype)
        for side, value in (("right", plus[0]), ("left", minus[0])):
            moved = theta_w.copy()
            moved[column] = value
            dynamic = list(p.dynamic)
            dynamic[position] = jax.numpy.asarray(moved.reshape(leaf.shape))
            sides[column, side] = analytic_jacobian(source, problem, dynamic, a.dynamic,
                                                    opts.batch_size)[number][:, column]
    g_right = np.array([sides[j[k], "right"][i[k]] for k in where])
    g_left = np.array([sides[j[k], "left"][i[k]] for k in where])
    sub = dataclasses.replace(kinks, right=kinks.right[where], left=kinks.left[where],
                              tolerance=kinks.tolerance[where])
    confirmed[where] = v.confirm_beside_kink(sub, g_right, g_left)
    return confirmed


def _require_finite(out: np.ndarray, indices, values, shape, problem: VectorProblem) -> None:
    bad = np.argwhere(~np.isfinite(out))
    if bad.size:
        k, i = (int(x) for x in bad[0])
        index = list(map(int, np.unravel_index(int(indices[k]), shape))) if shape else []
        raise ValueError(f"fn returned {out[k, i]} at {_output_entry(problem, i)} with a "
                         f"differentiated leaf's component {index} = {float(values[k])!r}; "
                         f"finite differences need outputs that are finite near primals")


def _output_entry(problem: VectorProblem, flat: int) -> str:
    layout = problem.layout
    for path, shape, leaf_is_complex, size in zip(layout.paths, layout.leaf_shapes, layout.complex,
                                             layout.sizes):
        if flat < size:
            index, part = locate(flat, shape, leaf_is_complex)
            return entry_name("out", path, index, part)
        flat -= size
    return f"output entry {flat}"


def _blocks(name: str, problem: VectorProblem, path: str, shape: tuple[int, ...], cplx: bool,
            result: tuple[np.ndarray, ...], output_name: str) -> list[JacobianBlock]:
    layout, blocks, start = problem.layout, [], 0
    for out_path, out_shape, leaf_is_complex, size in zip(layout.paths, layout.leaf_shapes,
                                                     layout.complex, layout.sizes):
        if size == 0:
            continue
        analytic, numerical, tolerance, status = (
            np.ascontiguousarray(x[:, start:start + size].T) for x in result)
        start += size
        blocks.append(JacobianBlock(name, out_path, out_shape, leaf_is_complex, path, shape, cplx,
                                    analytic, numerical, tolerance, status, output_name))
    return blocks
