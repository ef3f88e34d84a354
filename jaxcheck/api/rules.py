"""`check_rules`: exact consistency checks of a function's JVP/VJP rules.

Runs the checks of `rules/` (transpose identity, batching, compilation, cotangent
contracts, linearize) and the third-order check (`third_order`, finite differences of the
Hessian) on one function, and gathers them in a `RulesReport`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from ..inputs.callables import keyed
from ..inputs.options import Options, parse_options
from ..inputs.pytree import split
from ..inputs.validation import require_concrete
from ..report.rules import RulesReport
from ..rules.batching import check_batching
from ..rules.compilation import check_compilation
from ..rules.contracts import check_contracts
from ..rules.linearize import check_linearize
from ..rules.results import CHECKS, RuleCheck, outcome
from ..rules.subject import Settings, Subject, make_subject
from ..rules.transpose import check_transpose
from .third_order import third_order_findings

# The options of `check` that apply to check_rules; the others are refused by name.
RULES_OPTIONS = ("seed", "safety", "options")

RUNNERS: dict[str, Callable[[Subject, Settings], RuleCheck]] = {
    "transpose": check_transpose,
    "batching": check_batching,
    "compilation": check_compilation,
    "contracts": check_contracts,
    "linearize": check_linearize,
}


def check_rules(fn: Callable[..., Any], primals: Any, *args: Any,
                jvp_fn: Callable[..., Any] | None = None,
                vjp_fn: Callable[..., Any] | None = None,
                checks: tuple[str, ...] = CHECKS, **options: Any) -> RulesReport:
    """Check that the JVP/VJP rules of `fn(primals, *args)` are consistent with each other
    and with JAX's transformations, exactly up to rounding.

    Finite differences (`jaxcheck.check`) test whether a derivative computes the right
    formula; these checks compare JAX transformations of the same function with each other,
    so they see, at machine precision, mistakes no difference quotient resolves. A rule that
    is consistent but computes the wrong formula passes here: that is `check`'s job.

    - `"transpose"`: ⟨c, J·t⟩ = ⟨Jᵀ·c, t⟩ for random t, c, per (output, input) leaf, for the
      user's `jvp_fn`/`vjp_fn` pair or JAX's own JVP and VJP (not applicable to a
      `jax.custom_vjp`, which has no JVP; true by construction for a `jax.custom_jvp`, whose
      VJP is its JVP transposed by JAX).
    - `"batching"`: `vmap` of `fn`, of its VJP and of its JVP equals the loop over a batch.
    - `"compilation"`: `jax.jit` and eager evaluation agree, values and derivatives.
    - `"contracts"`: cotangents have their primals' dtypes and shapes, a zero cotangent gives
      exactly zero, integer inputs get float0 cotangents, symbolic-zero cotangents are
      accepted.
    - `"linearize"`: `jax.linearize` agrees with `jax.jvp`.
    - `"third_order"`: third derivatives (forward-over-reverse-over-reverse) against central
      differences of the Hessian of ⟨c, fn⟩, on all components of a small problem or a few
      random ones (`jaxcheck.check_third_order` checks them all).

    Tolerances come from rounding alone: the number of operations of the computation times
    the machine epsilon times the magnitudes of the terms compared (see `jaxcheck.rules`'s
    `rounding` module). Inputs are used in their own dtypes (float64 leaves under
    `jax.enable_x64(True)`, scoped to the call).

    **Arguments:**

    - `fn`: `fn(primals, *args)` returning an array or any pytree of arrays; its floating
      outputs are differentiated.
    - `primals`: any pytree; its floating leaves are differentiated, integer leaves carried.
    - `*args`: further arguments of `fn`, not differentiated.
    - `jvp_fn`: a hand-written JVP, `jvp_fn(primals, tangents, *args)` returning output
      tangents (tangents of integer leaves are float0).
    - `vjp_fn`: a hand-written VJP, `vjp_fn(primals, cotangents, *args)` returning a tree
      like `primals`.
    - `checks`: which checks to run, a tuple of the names above (default all).
    - `seed`, `safety`: the seed of the random tangents, cotangents and batches, and the
      factor on the rounding bound (default 3).

    **Returns:** a `jaxcheck.RulesReport`; `report.ok` is False iff some check FAILs, and
    each finding names its check, the leaf and index, both values and the tolerance.

    **Example:**

    ```python
    >>> import jax, jax.numpy as jnp, jaxcheck
    >>> @jax.custom_vjp
    ... def my_sin(x):
    ...     return jnp.sin(x)
    >>> my_sin.defvjp(lambda x: (my_sin(x), x), lambda x, g: (g * jnp.cos(x) + 1e-3,))
    >>> report = jaxcheck.check_rules(my_sin, jnp.ones(3), checks=("contracts",))
    >>> report.ok, [(f.what, f.location) for f in report.findings][0]
    (False, ('jax.vjp of a zero cotangent', 'vjp[0]'))

    ```
    """
    if isinstance(fn, Mapping) or not callable(fn):
        raise TypeError(f"fn: expected a callable fn(primals, *args), got {type(fn).__name__}")
    for name, value in (("jvp_fn", jvp_fn), ("vjp_fn", vjp_fn)):
        if value is not None and not callable(value):
            raise TypeError(f"{name}: expected a callable or None, got {type(value).__name__}")
    fn, jvp_fn, vjp_fn = keyed(fn), keyed(jvp_fn), keyed(vjp_fn)
    if isinstance(checks, str) or not all(c in CHECKS for c in checks):
        raise ValueError(f"checks: expected a tuple of names from {CHECKS}, got {checks!r}")
    opts = rules_options(options)
    require_concrete(primals, args)
    # float64 inputs stay float64 (scoped, never the global flag); others change nothing
    x64 = jax.enable_x64(True) if _has_64_bit(primals, args) else contextlib.nullcontext()
    with x64:
        p = split(primals)
        if not p.checked:
            raise ValueError("primals: expected a pytree with at least one floating-point "
                             f"array leaf; got {jax.tree_util.tree_structure(primals)}")
        subject = make_subject(fn, p, tuple(args), jvp_fn, vjp_fn)
        settings = Settings(seed=opts.seed, safety=opts.safety)
        results = []
        for name in CHECKS:
            if name not in checks:
                continue
            if name == "third_order":
                results.append(_third_order(subject, settings))
            else:
                results.append(RUNNERS[name](subject, settings))
    return RulesReport(tuple(results), info={"custom_rules": sorted(subject.custom_rules)})


def rules_options(options: dict[str, Any]) -> Options:
    """`Options` of `check_rules`: only `seed` and `safety` apply."""
    opts = parse_options(options)
    default = Options()
    base = options.get("options") or default
    for name in base.__dataclass_fields__:
        if name not in RULES_OPTIONS and getattr(opts, name) != getattr(default, name):
            raise TypeError(f"{name}: not an option of check_rules (it takes seed and "
                            f"safety)")
    return opts


def _has_64_bit(*trees: Any) -> bool:
    return any(getattr(getattr(x, "dtype", None), "itemsize", 0) == 8
               and jax.numpy.issubdtype(x.dtype, jax.numpy.floating)
               for x in jax.tree_util.tree_leaves(trees))


def _third_order(s: Subject, settings: Settings) -> RuleCheck:
    rng = settings.rng("third_order")
    cotangents = s.random_like(s.cotangent_leaves(), rng)
    if all(np.size(x) == 1 for x in s.cotangent_leaves()):
        cotangents = [jax.numpy.ones_like(c) for c in cotangents]  # a scalar loss: itself
    try:
        findings, notes, compared = third_order_findings(
            s.fn, s.primals.structure, s.primals.dynamic, s.primals.checked, s.in_paths,
            s.args, cotangents, rng, settings.safety)
    except Exception as e:  # a Hessian JAX cannot form (say, a rule that is not twice
        # differentiable) is reported, not raised: the other checks stand
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        return outcome("third_order", [], [f"not checked: {type(e).__name__}: {first}"], 0,
                       applicable=False)
    return outcome("third_order", findings, notes, compared)
