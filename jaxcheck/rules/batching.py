"""Batching: `vmap` of the function, of its VJP and of its JVP equals the loop over the batch.

A batch of `Settings.batch` primals (the given one and copies with every floating entry
scaled by 1 + U(−1/16, 1/16), which keeps signs, so a function defined for positive inputs
stays defined), random cotangents and tangents. Compared with the loop of unbatched calls:

- `vmap(fn)`: the primal function (a `jax.custom_batching.custom_vmap` rule shows here);
- `vmap(vjp)` over primals and cotangents, and over cotangents alone at the given primals
  (how `jax.jacrev` batches a pullback: a `custom_vjp` bwd with unbatched residuals);
- `vmap(jvp)` over primals and tangents (when `fn` has a JVP), and the user's `jvp_fn` /
  `vjp_fn` when given.

A transformation that raises under `vmap` (a bwd that uses a Python-side shape) is a
finding. Integer leaves and `args` are not batched. Both sides are compiled (the batch by
the engine, each row of the loop by `jax.jit`), so this check sees batching rules only;
`jit` against eager evaluation is the compilation check's.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..evaluation import engine
from .agreement import attempt, compare_leaves
from .results import RuleCheck, RuleFinding, outcome
from .rounding import operation_count, working_epsilon
from .subject import METHODS, Settings, Skeleton, Subject, skeleton

NAME = "batching"


def _stack(rows: list[list[Any]]) -> list[Any]:
    return [jnp.asarray(np.stack([np.asarray(row[k]) for row in rows]))
            for k in range(len(rows[0]))]


def _mapped_all(specs: tuple[tuple[str, Any], ...], key: Skeleton, primal_dynamic: Any,
                arg_dynamic: Any, *batched: Any) -> Any:
    """`vmap` of every (derivative name, in_axes) of `specs` over its arguments, as one batch
    program (compiled once, by the engine, keyed by the subject's skeleton)."""
    s = key.subject(primal_dynamic, arg_dynamic)
    return tuple(jax.vmap(getattr(s, METHODS[name]), in_axes=in_axes)(*args)
                 for (name, in_axes), args in zip(specs, batched))


def check_batching(s: Subject, settings: Settings) -> RuleCheck:
    rng = settings.rng(NAME)
    xs, outs = s.xs, s.cotangent_leaves()
    n = settings.batch
    primals = [xs] + [[(np.asarray(x) * (1 + rng.uniform(-1, 1, np.shape(x)) / 16))
                       .astype(np.asarray(x).dtype) for x in xs] for _ in range(n - 1)]
    primals = [[jnp.asarray(x) for x in row] for row in primals]
    cots = [s.random_like(outs, rng) for _ in range(n)]
    tans = [s.random_like(xs, rng) for _ in range(n)]
    X, C, T = _stack(primals), _stack(cots), _stack(tans)
    eps = working_epsilon(s.vjp, xs, xs, s.zeros_like(outs))
    findings: list[RuleFinding] = []
    notes = [f"vmap over a batch of {n} against the loop"]

    out_paths, in_paths = s.floating_out_paths, s.in_paths
    # (what, prefix, paths, f, batched args, per-row args, in_axes, name of the row program)
    cases: list[tuple[Any, ...]] = [
        ("vmap(fn) vs loop", "out", out_paths, s.outputs, (X,), [(p,) for p in primals], 0,
         "fn")]
    for name, vjp in s.vjps():
        cases.append((f"vmap({name}) vs loop", "vjp", in_paths, vjp, (X, C),
                      list(zip(primals, cots)), (0, 0), name))
        cases.append((f"vmap({name}) over cotangents vs loop", "vjp", in_paths, vjp, (xs, C),
                      [(xs, c) for c in cots], (None, 0), name))
    for name, jvp in s.jvps():
        cases.append((f"vmap({name}) vs loop", "jvp", out_paths, jvp, (X, T),
                      list(zip(primals, tans)), (0, 0), name))
    if not s.has_jvp:
        notes.append("fn contains a jax.custom_vjp: no JVP to batch")

    specs = tuple((case[7], case[6]) for case in cases)
    key, primal_dynamic, arg_dynamic = skeleton(s)
    shared = (primal_dynamic, arg_dynamic)
    try:  # one program for all; where it raises, each alone says which one breaks
        mapped_all = list(engine.call(_mapped_all, (specs, key), *shared,
                                      *(case[4] for case in cases)))
    except Exception:
        mapped_all = [attempt(NAME, case[0], lambda spec=spec, case=case: engine.call(
            _mapped_all, ((spec,), key), *shared, case[4])[0], findings)
            for spec, case in zip(specs, cases)]
    compared = 0
    for case, mapped in zip(cases, mapped_all):
        if mapped is not None:
            compared += _judge(s, case, [np.asarray(m) for m in mapped], eps, settings,
                               findings)
    return outcome(NAME, findings, notes, compared)


def _judge(s: Subject, case: tuple[Any, ...], mapped: list[np.ndarray], eps: float,
           settings: Settings, findings: list[RuleFinding]) -> int:
    """Row by row, the batch against the loop; stops at a row that differs."""
    what, prefix, paths, f, _, rows_args, _, name = case
    ops = operation_count(f, *rows_args[0])
    row = s.compiled[name]
    compared = 0
    for b, args in enumerate(rows_args):
        looped = attempt(NAME, what + " (loop)", lambda args=args: row(*args), findings)
        if looped is None:
            break
        terms = s.terms(name, *args) if name != "fn" else None
        found, k = compare_leaves(NAME, what, prefix, paths, looped, [m[b] for m in mapped],
                                  eps, ops, settings.safety, terms)
        compared += k
        if found:
            findings.extend(found)
            break
    return compared
