"""Cotangent contracts: what a VJP (and a JVP) must return whatever its formula.

- **dtype and shape**: each cotangent has its primal's dtype and shape, each output tangent
  its output's (PyTorch's `check_grad_dtypes`). JAX accepts a `custom_vjp` bwd that returns
  float32 for a float64 primal silently, and the gradient then rounds like float32.
- **zero in, zero out**: a zero cotangent gives exactly zero cotangents, a zero tangent
  exactly zero tangents (a bwd that is affine, not linear, in its cotangent fails).
- **linear**: the VJP of 2c is twice the VJP of c (a power of two scales exactly, so only
  rounding of the rest can differ).
- **integer inputs**: `jax.vjp` over the whole primals returns `float0` (or zero) cotangents
  for integer leaves, and `jax.jvp` accepts `float0` tangents for them; a user `vjp_fn`
  returns zeros, `float0` or None there.
- **symbolic zeros**: the VJP of one output leaf alone (the others unused, so their
  cotangents are symbolic zeros inside JAX, which a `jax.custom_vjp(symbolic_zeros=True)`
  bwd receives as `SymbolicZero`s) equals the VJP with explicit zero cotangents there.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..inputs.pytree import STATIC
from .agreement import attempt, compare_leaves, entry
from .results import RuleCheck, RuleFinding, outcome
from .rounding import operation_count, working_epsilon
from .subject import Settings, Subject, float0_like, is_floating

NAME = "contracts"


def _dtype_and_shape(what: str, prefix: str, paths, got: list[Any], like: list[Any],
                     findings: list[RuleFinding]) -> None:
    for path, g, x in zip(paths, got, like):
        if jnp.result_type(g) != jnp.result_type(x):
            findings.append(RuleFinding(NAME, f"{what} dtype", entry(prefix, path),
                                        str(jnp.result_type(x)), str(jnp.result_type(g)), None,
                                        f"{what} has dtype {jnp.result_type(g)}, its primal "
                                        f"{jnp.result_type(x)}"))
        if np.shape(g) != np.shape(x):
            findings.append(RuleFinding(NAME, f"{what} shape", entry(prefix, path),
                                        str(np.shape(x)), str(np.shape(g)), None,
                                        f"{what} has shape {np.shape(g)}, its primal "
                                        f"{np.shape(x)}"))


def _exact_zero(what: str, prefix: str, paths, got: list[Any],
                findings: list[RuleFinding]) -> int:
    for path, g in zip(paths, got):
        g = np.asarray(g, np.float64)
        bad = np.flatnonzero(g.reshape(-1) != 0)
        if bad.size:
            k = int(bad[0])
            index = tuple(int(i) for i in np.unravel_index(k, g.shape)) if g.shape else ()
            findings.append(RuleFinding(NAME, what, entry(prefix, path, index), 0.0,
                                        float(g.reshape(-1)[k]), 0.0,
                                        f"{what}: {bad.size} of {g.size} entries not exactly "
                                        f"zero (the rule is affine, not linear)"))
    return sum(int(np.size(g)) for g in got)


def check_contracts(s: Subject, settings: Settings) -> RuleCheck:
    rng = settings.rng(NAME)
    xs, outs = s.xs, s.cotangent_leaves()
    cs, ts = s.random_like(outs, rng), s.random_like(xs, rng)
    eps = working_epsilon(s.vjp, xs, xs, cs)
    findings: list[RuleFinding] = []
    notes: list[str] = []
    compared = 0
    for name, _ in s.vjps():
        vjp = s.compiled[name]   # held to eager evaluation by the compilation check
        got = attempt(NAME, name, lambda vjp=vjp: vjp(xs, cs), findings)
        if got is None:
            continue
        _dtype_and_shape(f"{name} cotangent", "vjp", s.in_paths, got, xs, findings)
        zero = attempt(NAME, f"{name} of a zero cotangent",
                       lambda vjp=vjp: vjp(xs, s.zeros_like(outs)), findings)
        if zero is not None:
            compared += _exact_zero(f"{name} of a zero cotangent", "vjp", s.in_paths, zero,
                                    findings)
        double = attempt(NAME, f"{name} of 2c", lambda vjp=vjp: vjp(xs, [2 * c for c in cs]),
                         findings)
        if double is not None:
            found, k = compare_leaves(NAME, f"{name}(2c) vs 2*{name}(c)", "vjp", s.in_paths,
                                      [2 * np.asarray(g, np.float64) for g in got], double,
                                      eps, operation_count(vjp, xs, cs), settings.safety,
                                      _doubled(s.terms(name, xs, cs)))
            findings += found
            compared += k
    for name, _ in s.jvps():
        jvp = s.compiled[name]
        got = attempt(NAME, name, lambda jvp=jvp: jvp(xs, ts), findings)
        if got is None:
            continue
        _dtype_and_shape(f"{name} tangent", "jvp", s.floating_out_paths, got, outs, findings)
        zero = attempt(NAME, f"{name} of a zero tangent",
                       lambda jvp=jvp: jvp(xs, s.zeros_like(xs)), findings)
        if zero is not None:
            compared += _exact_zero(f"{name} of a zero tangent", "jvp", s.floating_out_paths,
                                    zero, findings)
    notes.append("dtypes and shapes; zero in, exactly zero out; linear in the cotangent")
    compared += _integer_inputs(s, cs, findings, notes)
    compared += _symbolic_zeros(s, cs, eps, settings, findings, notes)
    return outcome(NAME, findings, notes, compared)


def _doubled(terms: list[Any] | None) -> list[Any] | None:
    return None if terms is None else [2 * m for m in terms]


def _integer_inputs(s: Subject, cs: list[Any], findings: list[RuleFinding],
                    notes: list[str]) -> int:
    """float0 (or zero) cotangents for the integer leaves of `primals`; float0 tangents
    accepted by `jax.jvp`."""
    structure = s.primals.structure
    positions = [k for k, x in enumerate(s.primals.dynamic)
                 if k not in s.primals.checked and not is_floating(x)
                 and not jnp.issubdtype(jnp.result_type(x), jax.dtypes.prng_key)]
    if not positions:
        return 0
    notes.append(f"{len(positions)} integer input leaf(s): float0 cotangents and tangents")

    def whole(tree: Any) -> Any:
        leaves = jax.tree_util.tree_leaves(s.fn(tree, *s.args))
        return [leaves[k] for k in s.out_floating]

    primals = structure.rebuild(s.primals.dynamic)
    got = attempt(NAME, "jax.vjp with integer inputs",
                  lambda: jax.vjp(whole, primals)[1](list(cs))[0], findings)
    sources: list[tuple[str, Any]] = [("jax.vjp", got)] if got is not None else []
    user_vjp = s.vjp_fn
    if user_vjp is not None:
        user = attempt(NAME, "vjp_fn",
                       lambda: user_vjp(primals, s.output_cotangents(cs), *s.args), findings)
        if user is not None:
            sources.append(("vjp_fn", user))
    dynamic_paths = _dynamic_paths(s)
    for name, tree in sources:
        leaves = structure.treedef.flatten_up_to(tree)
        dynamic = [leaf for leaf, kind in zip(leaves, structure.kinds) if kind != STATIC]
        for k in positions:
            ct = dynamic[k]
            if ct is None or jnp.result_type(ct) == jax.dtypes.float0:
                continue
            if not np.all(np.asarray(ct) == 0):
                findings.append(RuleFinding(
                    NAME, f"{name} cotangent of an integer input", dynamic_paths[k],
                    "float0", str(jnp.result_type(ct)), None,
                    f"{name} returns nonzero {jnp.result_type(ct)} for an integer leaf "
                    f"(expected float0 or zeros)"))
    tangents = structure.rebuild([float0_like(x) if k in positions else
                                  (jnp.zeros_like(x) if k in s.primals.checked else
                                   float0_like(x)) for k, x in enumerate(s.primals.dynamic)])
    attempt(NAME, "jax.jvp with float0 tangents for integer inputs",
            lambda: jax.jvp(whole, (primals,), (tangents,)) if s.has_jvp else None, findings)
    return len(positions)


def _dynamic_paths(s: Subject) -> list[str]:
    with_paths, _ = jax.tree_util.tree_flatten_with_path(
        s.primals.structure.rebuild(s.primals.dynamic))
    return [jax.tree_util.keystr(p)
            for (p, _), kind in zip(with_paths, s.primals.structure.kinds) if kind != STATIC]


def _symbolic_zeros(s: Subject, cs: list[Any], eps: float, settings: Settings,
                    findings: list[RuleFinding], notes: list[str]) -> int:
    """The VJP of each floating output leaf alone against the VJP with explicit zeros."""
    if len(s.out_floating) < 2:
        return 0
    notes.append("each output leaf's VJP alone (symbolic-zero cotangents for the others)")
    xs, compared = s.xs, 0
    for o, path in enumerate(s.floating_out_paths):
        def alone(xs: list[Any], o: int = o) -> Any:
            return s.outputs(xs)[o]

        by_zeros: Callable[[], Any] = lambda o=o: s.vjp(  # noqa: E731
            xs, [c if k == o else jnp.zeros_like(c) for k, c in enumerate(cs)])
        explicit = attempt(NAME, f"jax.vjp with zero cotangents but out{path}", by_zeros,
                           findings)
        single = attempt(NAME, f"jax.vjp of out{path} alone",
                         lambda alone=alone, o=o: jax.vjp(alone, xs)[1](cs[o])[0], findings)
        if explicit is None or single is None:
            continue
        only = [c if k == o else jnp.zeros_like(c) for k, c in enumerate(cs)]
        found, k = compare_leaves(NAME, f"vjp of out{path} alone vs with zero cotangents",
                                  "vjp", s.in_paths, explicit, single, eps,
                                  operation_count(s.vjp, xs, cs), settings.safety,
                                  s.terms("jax.vjp", xs, only))
        findings += found
        compared += k
    return compared
