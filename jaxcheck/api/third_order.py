"""`check_third_order`: third derivatives, as the Jacobian of the Hessian.

The Hessian of the scalar loss w.r.t. the checked leaves, by reverse-over-reverse
(`jax.jacrev` of `jax.grad`), is a tree-valued function of the params; its Jacobian holds
the third derivatives. Column k is a central difference of the Hessian along component k
(2 Hessian evaluations), compared entry by entry with JAX's forward-mode derivative of the
Hessian (`jax.jvp`: forward-over-reverse-over-reverse), with the error model of `check`. A
failure names (Hessian block, index; param leaf, index), e.g. `hess[0][0][1, 2] wrt [3]`:
∂³f / ∂θ₁∂θ₂∂θ₃ in the first checked leaf. A `jax.custom_jvp` whose rule is right to
second order but not to third (its rule's own derivative differentiates to a wrong value)
shows here and nowhere else. For a `jax.custom_vjp`, which has no forward mode, the
Hessian's derivative is taken by reverse mode instead (with a note).

The Hessian has n² entries for n checked components and the check evaluates it 2n + 1 times
or more: it is meant for small problems. `check_rules` checks third order on a few sampled
components of a larger one (`third_order_findings`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..evaluation.analytic_jacobian import Source
from ..inputs.options import parse_options
from ..inputs.precision import cast_floating, machine_epsilon
from ..inputs.prepare import prepared
from ..inputs.pytree import Structure
from ..inputs.validation import require_scalar_loss, trace_loss
from ..inputs.vector_problem import VectorProblem
from ..numerics import differences as d
from ..report.jacobian import JacobianFailure, JacobianReport
from ..rules.magnitudes import term_magnitudes
from ..rules.results import RuleFinding
from ..rules.rounding import operation_count
from .hessian import of_checked_leaves
from .jacobian import compare


@dataclasses.dataclass(frozen=True)
class _HessianOfChecked:
    """The Hessian of `fn` w.r.t. the checked leaves, reverse-over-reverse: a list (leaf a)
    of lists (leaf b) of arrays of shape shape_a + shape_b. Hashable: a compilation key."""

    fn: Callable[..., Any]
    params: Structure

    def __call__(self, params: Any, *args: Any) -> Any:
        loss, leaves, checked = of_checked_leaves(self.fn, self.params, params, args)
        return jax.jacrev(jax.grad(loss))([leaves[k] for k in checked])


def check_third_order(fn: Callable[..., Any], params: Any, *args: Any,
                      **options: Any) -> JacobianReport:
    """Check the third derivatives of the scalar loss `fn(params, *args)`.

    The Hessian (reverse-over-reverse) is checked as a function of `params`: its derivative by
    forward mode (forward-over-reverse-over-reverse) against central differences of the
    Hessian, entry by entry. `check(..., order=3)` points here.

    **Arguments:** as for `jaxcheck.check` (`fn`, `params`, `*args`, `**options`).

    **Returns:** a `jaxcheck.JacobianReport` whose blocks are (Hessian block, param leaf);
    failures are named like `hess[0][0][1, 2] wrt [3]` (the Hessian block of the first and
    first checked leaf, entry (1, 2), w.r.t. component 3 of the leaf `[3]` names).

    **Example:**

    ```python
    >>> import jax.numpy as jnp, jaxcheck
    >>> jaxcheck.check_third_order(lambda w: jnp.sum(jnp.sin(w) * w[0]), jnp.ones(3)).ok
    True

    ```
    """
    if isinstance(fn, Mapping):
        raise TypeError("fn: check_third_order takes one loss function")
    opts = parse_options(options)
    if opts.order != 1:
        raise ValueError(f"order: check_third_order checks third derivatives itself; leave "
                         f"order at its default, got order={opts.order!r}")
    if opts.mode != "full" or opts.method != "central":
        raise NotImplementedError(f"check_third_order: mode={opts.mode!r}, "
                                  f"method={opts.method!r} (only 'full', 'central')")
    with prepared(fn, params, args, None, opts) as inputs:
        p, a = inputs.params, inputs.args
        _, out = trace_loss(inputs.problem, p, a)
        require_scalar_loss(out)
        vector = VectorProblem(_HessianOfChecked(inputs.problem.fn, p.structure),
                               p.structure, a.structure, p.checked)
        complex_flags = (False,) * len(p.checked)
        report = compare(vector, p, a, [Source("fwd")], opts, inputs.precision,
                         complex_flags, who="jax.hessian(fn)", output_name="hess")
        if not report.blocks:  # a custom_vjp: no forward mode; reverse over the Hessian
            report = compare(vector, p, a, [Source("rev")], opts, inputs.precision,
                             complex_flags, who="jax.hessian(fn)", output_name="hess")
            report = dataclasses.replace(report, notes=report.notes + (
                "fn contains a jax.custom_vjp (no forward mode): the Hessian's derivative "
                "is taken by reverse mode",))
        return report


# ------------------------------------------------------------------ for check_rules

THIRD_ORDER_ALL = 12      # problems this small are checked in every component
THIRD_ORDER_SAMPLES = 6   # larger ones in this many random components


@dataclasses.dataclass(frozen=True)
class _Restricted:
    """⟨c, fn(primals with the chosen components set to z)⟩: a scalar function of the
    chosen components. Hashable: the chosen components and fn are its identity."""

    fn: Callable[..., Any]
    structure: Structure
    checked: tuple[int, ...]          # positions of the floating leaves in `dynamic`
    chosen: tuple[tuple[int, int], ...]   # (checked leaf number, flat index) per z entry

    def __call__(self, z: Any, dynamic: Any, cotangents: Any, *args: Any) -> Any:
        dynamic = list(dynamic)
        for number, position in enumerate(self.checked):
            slots = [m for m, (leaf, _) in enumerate(self.chosen) if leaf == number]
            if not slots:
                continue
            index = np.array([self.chosen[m][1] for m in slots])
            leaf = dynamic[position]
            flat = leaf.reshape(-1).at[index].set(z[np.array(slots)].astype(leaf.dtype))
            dynamic[position] = flat.reshape(leaf.shape)
        out = jax.tree_util.tree_leaves(self.fn(self.structure.rebuild(dynamic), *args))
        floating = [x for x in out if jnp.issubdtype(jnp.result_type(x), jnp.floating)]
        return sum(jnp.vdot(c.astype(x.dtype), x) for c, x in zip(cotangents, floating))


def _component_name(path: str, shape: tuple[int, ...], flat: int) -> str:
    if not shape:
        return path
    return f"{path}[{', '.join(str(int(i)) for i in np.unravel_index(flat, shape))}]"


def third_order_findings(fn: Callable[..., Any], structure: Structure,
                         dynamic: tuple[Any, ...], checked: tuple[int, ...],
                         paths: tuple[str, ...], args: tuple[Any, ...],
                         cotangents: list[Any], rng: np.random.Generator,
                         safety: float) -> tuple[list[RuleFinding], list[str], int]:
    """`check_third_order` of ⟨c, fn⟩ on all components (small problems) or a random few;
    findings named by the components' leaves and indices."""
    sizes = [int(np.size(dynamic[p])) for p in checked]
    every = [(number, i) for number, size in enumerate(sizes) for i in range(size)]
    if len(every) <= THIRD_ORDER_ALL:
        chosen = every
        note = f"all {len(every)} components"
    else:
        picks = rng.choice(len(every), THIRD_ORDER_SAMPLES, replace=False)
        chosen = [every[k] for k in sorted(picks)]
        note = f"{THIRD_ORDER_SAMPLES} random components of {len(every)}"
    z = np.array([np.asarray(dynamic[checked[n]]).reshape(-1)[i] for n, i in chosen],
                 np.float64)
    restricted = _Restricted(fn, structure, checked, tuple(chosen))
    report = check_third_order(restricted, z, tuple(dynamic), list(cotangents), *args,
                               safety=safety)
    names = [_component_name(paths[n], np.shape(dynamic[checked[n]]), i) for n, i in chosen]
    findings = []
    extra = _cancellation_tolerances(restricted, z, dynamic, cotangents, args,
                                     report.failures, safety)
    for f, more in zip(report.failures, extra):
        (i, j), (k,) = f.output_index, f.input_index
        tolerance = f.tolerance + more
        if abs(f.analytic - f.numerical) <= tolerance:
            continue
        findings.append(RuleFinding(
            "third_order", f"d/dθ of the Hessian ({f.ad}) vs central differences",
            f"d3f/d{names[i]}d{names[j]}d{names[k]}", f.numerical, f.analytic, tolerance,
            "a third derivative is wrong"))
    reverse = any("custom_vjp" in n for n in report.notes)
    mode = ("reverse-over-reverse-over-reverse (fn contains a jax.custom_vjp: no forward mode)"
            if reverse else "forward-over-reverse-over-reverse")
    notes = [f"{mode} against central differences of the Hessian on {note}",
             *(n for n in report.notes if "custom_vjp" not in n)]
    return findings, notes, report.n_components


def _cancellation_tolerances(restricted: _Restricted, z: np.ndarray, dynamic: tuple[Any, ...],
                             cotangents: list[Any], args: tuple[Any, ...],
                             failures: tuple[JacobianFailure, ...],
                             safety: float) -> list[float]:
    """Per failure (i, j, k), the rounding that cancellation inside the Hessian adds.

    `compare` bounds the rounding of each Hessian entry by ε·|Hᵢⱼ|, right for an entry
    computed without cancellation. A Hessian entry of a loss summed over samples is formed
    from terms of both signs: its rounding is ~ops·ε·Σ|terms| (`rules.rounding`), and a
    central difference at the finest step h divides that by h. Σ|terms| of Hᵢⱼ = (H·eⱼ)ᵢ is
    read from the Hessian-vector product by reverse-over-reverse, linear in eⱼ
    (`rules.magnitudes`); that of the third derivative from the reverse derivative of the
    Hessian at the cotangent eᵢeⱼᵀ likewise (reverse mode: a `custom_vjp` has no other).
    """
    if not failures:
        return []
    with jax.enable_x64(True):
        z64 = jnp.asarray(z, jnp.float64)
        rest = (tuple(cast_floating(x, jnp.float64) for x in dynamic),
                [cast_floating(c, jnp.float64) for c in cotangents],
                *(cast_floating(x, jnp.float64) for x in args))
        eps = machine_epsilon(jnp.float64)
        grad = jax.grad(lambda z: restricted(z, *rest))
        hessian = jax.jacrev(grad)

        def hvp(z: Any, v: Any) -> Any:   # reverse-over-reverse: H is symmetric
            return jax.vjp(grad, z)[1](v)[0]

        def third(z: Any, v: Any) -> Any:  # Σᵢⱼ vᵢⱼ Tᵢⱼₖ, by reverse mode (a custom_vjp too)
            return jax.vjp(hessian, z)[1](v)[0]

        # each compiled once, for every failure (eager evaluation compiles op by op)
        hvp_terms = jax.jit(lambda z, v: term_magnitudes(lambda w: hvp(z, w), v))
        third_terms_of = jax.jit(lambda z, v: term_magnitudes(lambda w: third(z, w), v))
        basis = np.eye(z.size)
        ops = operation_count(hvp, z64, z64)
        h_finest = (d.relative_step(eps, d.RICHARDSON_EXPONENT)
                    / 2 ** (d.RICHARDSON_LEVELS - 1))
        out = []
        for f in failures:
            (i, j), (k,) = f.output_index, f.input_index
            hessian_terms = _or_none(hvp_terms, z64, jnp.asarray(basis[j]))
            third_terms = _or_none(third_terms_of, z64,
                                   jnp.asarray(np.outer(basis[i], basis[j])))
            m_h = float(hessian_terms[0][i]) if hessian_terms else 0.0
            m_t = float(third_terms[0][k]) if third_terms else 0.0
            h = h_finest * max(1.0, abs(float(z[k])))
            out.append(safety * ops * eps * (m_h / h + m_t))
        return out


def _or_none(f: Callable[..., Any], *args: Any) -> list[np.ndarray] | None:
    """`f(*args)` as float64 arrays, or None where it cannot be formed (then the failure
    keeps `compare`'s own tolerance)."""
    try:
        return [np.asarray(m, np.float64) for m in f(*args)]
    except Exception:
        return None
