"""Transpose identity: ⟨c, J·t⟩ = ⟨Jᵀ·c, t⟩ for random t and c, per (output, input) leaf.

It applies wherever the JVP and the VJP are defined independently:

- a user's `jvp_fn` and `vjp_fn` pair (or one of them against JAX's other mode);
- JAX's own `jax.jvp` and `jax.vjp` of `fn`: every primitive brings its own JVP and
  transpose rule (`jax.extend` primitives included), so a wrong transpose rule shows here.
- A `jax.custom_jvp` has no VJP of its own: JAX transposes its JVP rule, so the identity
  holds there by construction (a note says so; the rest of `fn` is still checked).
- A `jax.custom_vjp` has no JVP, so there is nothing to transpose its bwd against: the check
  does not apply (its bwd is held by the contracts, batching and compilation checks, and by
  `check`'s finite differences).

A failing pair small enough (`Settings.localise_max` entries on each side) is localised: its
Jacobian block is formed column by column from the JVP and row by row from the VJP, and the
worst entry is reported.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .agreement import attempt, entry
from .results import RuleCheck, RuleFinding, outcome
from .rounding import (
    elementwise_tolerance,
    inner_product_tolerance,
    operation_count,
    working_epsilon,
)
from .subject import Settings, Subject

NAME = "transpose"


def check_transpose(s: Subject, settings: Settings) -> RuleCheck:
    notes: list[str] = []
    kinds = s.custom_rules
    jvp_name = "jvp_fn" if s.jvp_fn is not None else "jax.jvp"
    vjp_name = "vjp_fn" if s.vjp_fn is not None else "jax.vjp"
    jvp, vjp = s.compiled[jvp_name], s.compiled[vjp_name]
    if jvp_name == "jax.jvp" and not s.has_jvp:
        notes.append("fn contains a jax.custom_vjp, which has no JVP: the transpose identity "
                     "does not apply (pass jvp_fn to check a hand-written JVP against its "
                     "VJP)")
        return outcome(NAME, [], notes, 0, applicable=False)
    if jvp_name == "jax.jvp" and vjp_name == "jax.vjp" and "custom_jvp" in kinds:
        notes.append("fn contains a jax.custom_jvp: JAX's VJP of it is its JVP rule "
                     "transposed by JAX, so the identity holds there by construction")
    notes.append(f"<c, {jvp_name}(t)> vs <{vjp_name}(c), t>, {settings.pairs} random pairs "
                 f"per (output, input) leaf")
    rng = settings.rng(NAME)
    xs, outs = s.xs, s.cotangent_leaves()
    eps = working_epsilon(s.vjp, xs, xs, s.zeros_like(outs))
    ops = (operation_count(jvp, xs, s.zeros_like(xs))
           + operation_count(vjp, xs, s.zeros_like(outs)))
    findings: list[RuleFinding] = []
    compared = 0
    worst: dict[tuple[int, int], RuleFinding] = {}
    for _ in range(settings.pairs):
        ts = s.random_like(xs, rng)
        cs = s.random_like(outs, rng)
        # one VJP per output leaf's cotangent, shared by every input leaf
        vcs = []
        for o, c in enumerate(cs):
            only_c = [c if k == o else z for k, z in enumerate(s.zeros_like(outs))]
            vc = attempt(NAME, vjp_name, lambda only_c=only_c: vjp(xs, only_c), findings)
            if vc is None:
                return outcome(NAME, findings, notes, compared)
            vcs.append((vc, s.terms(vjp_name, xs, only_c) or [np.abs(g) for g in vc]))
        for i, t in enumerate(ts):
            only_t = [t if k == i else z for k, z in enumerate(s.zeros_like(xs))]
            jt = attempt(NAME, jvp_name, lambda only_t=only_t: jvp(xs, only_t), findings)
            if jt is None:
                return outcome(NAME, findings, notes, compared)
            jt_terms = s.terms(jvp_name, xs, only_t) or [np.abs(y) for y in jt]
            for o, (c, (vc, vc_terms)) in enumerate(zip(cs, vcs)):
                c64, t64 = np.asarray(c, np.float64), np.asarray(t, np.float64)
                a = float(np.sum(c64 * np.asarray(jt[o], np.float64)))
                b = float(np.sum(np.asarray(vc[i], np.float64) * t64))
                tol = inner_product_tolerance(np.abs(c64) * jt_terms[o],
                                              vc_terms[i] * np.abs(t64), eps, ops,
                                              settings.safety)
                compared += 1
                if not abs(a - b) <= tol:
                    where = f"out{s.floating_out_paths[o]} wrt {s.in_paths[i] or 'primals'}"
                    found = RuleFinding(NAME, f"<c, {jvp_name}(t)> vs <{vjp_name}(c), t>",
                                        where, a, b, tol, "the VJP is not the transpose of "
                                        "the JVP")
                    if (o, i) not in worst or found.excess > worst[o, i].excess:
                        worst[o, i] = found
    findings += list(worst.values())
    for o, i in worst:
        findings += _localise(s, o, i, jvp, vjp, jvp_name, vjp_name, eps, ops, settings)
    return outcome(NAME, findings, notes, compared)


def _unit(zeros: list, k: int, like: Any, j: int) -> list:
    """`zeros` with leaf k replaced by the unit vector of its entry j (shaped like `like`)."""
    e = np.zeros(int(np.size(like)), np.asarray(like).dtype)
    e[j] = 1
    return [e.reshape(np.shape(like)) if n == k else z for n, z in enumerate(zeros)]


def _localise(s: Subject, o: int, i: int, jvp, vjp, jvp_name: str, vjp_name: str,
              eps: float, ops: int, settings: Settings) -> list[RuleFinding]:
    """The worst entry of the (output o, input i) Jacobian block, from JVP columns against
    VJP rows, where the block is small enough."""
    xs, outs = s.xs, s.cotangent_leaves()
    n_in, n_out = int(np.size(xs[i])), int(np.size(outs[o]))
    if max(n_in, n_out) > settings.localise_max:
        return []
    zx, zo = s.zeros_like(xs), s.zeros_like(outs)
    columns = [np.asarray(jvp(xs, _unit(zx, i, xs[i], j))[o], np.float64).reshape(-1)
               for j in range(n_in)]
    rows = [np.asarray(vjp(xs, _unit(zo, o, outs[o], r))[i], np.float64).reshape(-1)
            for r in range(n_out)]
    by_jvp = np.stack(columns, axis=1)      # (n_out, n_in)
    by_vjp = np.stack(rows, axis=0)
    tol = elementwise_tolerance(by_jvp, by_vjp, eps, ops, settings.safety)
    bad = ~(np.abs(by_jvp - by_vjp) <= tol)
    if not bad.any():
        return []
    excess = np.where(bad, np.nan_to_num(np.abs(by_jvp - by_vjp) / np.maximum(tol, 1e-300),
                                         nan=np.inf), -1.0)
    r, j = np.unravel_index(int(np.argmax(excess)), excess.shape)
    out_index = tuple(int(k) for k in np.unravel_index(r, np.shape(outs[o])))
    in_index = tuple(int(k) for k in np.unravel_index(j, np.shape(xs[i])))
    where = (entry("d out", s.floating_out_paths[o], out_index) + "/"
             + entry("d", s.in_paths[i], in_index))
    return [RuleFinding(NAME, f"J from {jvp_name} vs J from {vjp_name}", where,
                        float(by_jvp[r, j]), float(by_vjp[r, j]), float(tol[r, j]),
                        f"{int(bad.sum())} of {bad.size} Jacobian entries differ")]
