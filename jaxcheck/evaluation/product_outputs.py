"""A leaf's derivatives through the values its uses reach: few points, each changing little.

A weight entry of an attention's query projection changes a column of every sequence's
queries, so every row of every attention map: followed through the loss, its change reaches
everything downstream. One entry of the attention scores changes one row of one map, one
position downstream. Each use of a leaf W is followed through the equations affine in it
(products, quotients, sums, negations, gathers, reshapes: `cuts`) while the value has one use,
up to a value Y = P(W) (the other operands at θ). By the chain rule, over the uses, each with
the others held at θ,

    ∂f/∂W = Σ_uses Pᵀ(∂f/∂Y),

and ∂f/∂Y comes from central differences of the loss with Y given (`OutputLoss`, holding only
the equations that follow Y), entry by entry. Those may be more points than W has entries,
yet each is a change that stays in a row or a sequence (`local_changes` follows it cheaply),
where W's own points each recompute everything downstream. `transposed` maps the differences
back through Pᵀ, exactly (JAX's transpose of the chain, at θ), and maps their roundings with
the magnitudes and the squares of the chain's coefficients.

Only the first pass of full mode goes this way, as a screen: a component whose estimate lies
within its rounding of the analytic value passes; any other is evaluated along its own line,
as without the screen (`numerics.full`), so a verdict other than PASS is never made here.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _compiler, _jaxpr
from ..inputs.problem import Problem
from ..inputs.pytree import CARRIED, CHECKED, Structure


@dataclasses.dataclass(frozen=True)
class Cut:
    """One use of the leaf, followed while it stays affine in the leaf: the equations from the
    leaf to the value the points move (`last`'s output), and per equation the operand that
    carries the leaf."""

    chain: tuple[int, ...]
    slots: tuple[int, ...]

    @property
    def last(self) -> int:
        return self.chain[-1]


def cuts(jaxpr: Any, position: int) -> tuple[Cut, ...] | None:
    """Every use of input `position` of `jaxpr`, each followed from the leaf through the
    equations affine in it (`_affine_in`) while the value has one use, up to the first value
    with another use or several (`Cut`); None where the leaf itself has a use that is not
    affine in it, or a use reaches the loss's output."""
    outputs = {v for v in jaxpr.outvars if _jaxpr.is_var(v)}
    uses: dict[Any, list[tuple[int, int]]] = {}
    for k, eqn in enumerate(jaxpr.eqns):
        for slot, v in enumerate(eqn.invars):
            if _jaxpr.is_var(v):
                uses.setdefault(v, []).append((k, slot))
    root = jaxpr.invars[position]

    def affine(var: Any) -> tuple[int, int] | None:
        """The one use of `var`, where the use reads it once and is affine in it."""
        found = uses.get(var, [])
        if len(found) != 1 or var in outputs:
            return None
        k, slot = found[0]
        return found[0] if _affine_in(jaxpr.eqns[k], slot) else None

    found_cuts = []
    for k, slot in uses.get(root, []):
        eqn = jaxpr.eqns[k]
        if root in outputs or sum(v is root for v in eqn.invars) != 1 or \
                not _affine_in(eqn, slot):
            return None
        chain, slots, var = [k], [slot], eqn.outvars[0]
        while (step := affine(var)) is not None:
            chain.append(step[0])
            slots.append(step[1])
            var = jaxpr.eqns[step[0]].outvars[0]
        if var in outputs:
            return None
        found_cuts.append(Cut(tuple(chain), tuple(slots)))
    return tuple(sorted(found_cuts, key=lambda c: c.last)) or None


def _affine_in(eqn: Any, slot: int) -> bool:
    """Whether `eqn`'s one output, floating, is affine in operand `slot` alone (read once).

    Its other operands may depend on the leaf through its other uses: the chain rule sums over
    the uses, each with the others at θ (a tied table's output product, whose rows depend on
    the table through its gather). They cannot depend on the chain itself, each of whose
    values has one use, the next equation of the chain."""
    outs = eqn.outvars
    dtype = _jaxpr.var_dtype(outs[0]) if len(outs) == 1 else None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        return False
    kind = _jaxpr.name(eqn)
    if kind in (_jaxpr.DOT, _jaxpr.CONV, _jaxpr.MUL):
        return slot in (0, 1)
    if kind in (_jaxpr.GATHER, _jaxpr.DYNAMIC_SLICE, _jaxpr.DIV):
        return slot == 0
    return kind in _jaxpr.AFFINE_MOVES


def evaluate(closed: Any, invals: Sequence[Any], given: dict[int, Any] | None = None,
             needed: frozenset[int] | None = None) -> tuple[Any, dict]:
    """`closed` evaluated equation by equation, the outputs of the equations in `given`
    (index → value) taken from it instead, and only the equations in `needed` (all if None);
    (its one output, every variable's value)."""
    given = given or {}
    jaxpr, env = closed.jaxpr, {}

    def read(v: Any) -> Any:
        return v.val if _jaxpr.is_literal(v) else env[v]

    env.update(zip(jaxpr.constvars, closed.consts))
    env.update(zip(jaxpr.invars, invals))
    for k, eqn in enumerate(jaxpr.eqns):
        if k in given:
            outs = [given[k]]
        elif needed is not None and k not in needed:
            continue
        else:
            out = _jaxpr.bind(eqn, [read(v) for v in eqn.invars])
            outs = out if _jaxpr.multiple_results(eqn) else [out]
        env.update((v, x) for v, x in zip(eqn.outvars, outs) if not _jaxpr.is_dropped(v))
    return read(jaxpr.outvars[0]), env


def needed_after(jaxpr: Any, given: int) -> frozenset[int]:
    """The equations the output needs once equation `given`'s output is given: not those
    that only fed it (the leaf's products upstream, the layers before a late value), so that
    the loss over a value traces, costs and compiles what follows the value alone. An
    equation with effects (a callback) is kept."""
    live = {v for v in jaxpr.outvars if _jaxpr.is_var(v)}
    needed = set()
    for k in reversed(range(len(jaxpr.eqns))):
        eqn = jaxpr.eqns[k]
        if k == given or not (eqn.effects or any(v in live for v in eqn.outvars)):
            continue
        needed.add(k)
        live.update(v for v in eqn.invars if _jaxpr.is_var(v))
    return frozenset(needed)


@dataclasses.dataclass(frozen=True, eq=False)
class OutputLoss:
    """The loss with one value given: `fn((*param_dynamic, y), *arg_dynamic)`, equation
    `last` (whose output y is) not evaluated, nor any equation only it needed (hashed by
    identity, kept per problem and shapes: the key of its compiled programs)."""

    closed: Any
    last: int

    @functools.cached_property
    def needed(self) -> frozenset[int]:
        return needed_after(self.closed.jaxpr, self.last)

    def __call__(self, params_and_output: Sequence[Any], *arg_dynamic: Any) -> Any:
        *params, y = params_and_output
        out, _ = evaluate(self.closed, [*params, *arg_dynamic], {self.last: y}, self.needed)
        return out


def output_problem(closed: Any, cut: Cut, n_params: int, n_args: int) -> Problem:
    """The `Problem` of `OutputLoss` over the params (carried), the value y (the one checked
    leaf, last) and the args."""
    params = Structure(jax.tree_util.tree_structure(tuple(range(n_params + 1))),
                       (CARRIED,) * n_params + (CHECKED,), ())
    args = Structure(jax.tree_util.tree_structure(tuple(range(n_args))),
                     (CARRIED,) * n_args, ())
    return Problem(OutputLoss(closed, cut.last), params, args)


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """Leaf `position`'s uses (`cuts`), each with the loss over the value it reaches (found
    once per problem and shapes: the problems key their compiled programs)."""

    closed: Any
    position: int
    cuts: tuple[Cut, ...]
    problems: tuple[Problem, ...]

    def output_var(self, use: int) -> Any:
        return self.closed.jaxpr.eqns[self.cuts[use].last].outvars[0]

    @functools.cached_property
    def placeholders(self) -> tuple[Any, ...]:
        """Zeros of each value's shape and dtype: what is decided and compiled from its
        shapes alone (placed, not computed: nothing to compile)."""
        avals = [self.output_var(k).aval for k in range(len(self.cuts))]
        return tuple(jax.device_put(np.zeros(a.shape, a.dtype)) for a in avals)


@dataclasses.dataclass(frozen=True, eq=False)
class AtTheta:
    """A plan at θ: its values there, and (for all the plans of a check) the chains' other
    operands (`outputs`)."""

    plan: Plan
    param_dynamic: tuple[Any, ...]
    outputs: tuple[Any, ...]
    taken: tuple[Plan, ...]          # every plan of the check, in the order of their leaves
    operands: tuple[Any, ...]        # their chains' other operands at θ

    def dynamic(self, use: int) -> tuple[Any, ...]:
        """The params of use `use`'s problem: the loss's params, and Y last (the same tuple
        at every call: the engine keys what it learns of the inputs by their ids)."""
        return self._dynamics[use]

    @functools.cached_property
    def _dynamics(self) -> tuple[tuple[Any, ...], ...]:
        return tuple((*self.param_dynamic, y) for y in self.outputs)


# The two programs of this path (`engine.call`: compiled once per plans and shapes), each
# over every leaf of a check that takes it: the loss evaluated once, at θ, for the values and
# the chains' other operands; the chains' transposes, from those operands.

def chain_operands(plans: tuple[Plan, ...]) -> tuple[Any, ...]:
    """The variables the plans' chains read besides the leaves (their other operands), in
    the loss's order."""
    jaxpr = plans[0].closed.jaxpr
    found: dict[Any, None] = {}
    for p in plans:
        for cut in p.cuts:
            for k, slot in zip(cut.chain, cut.slots):
                found.update((v, None) for s, v in enumerate(jaxpr.eqns[k].invars)
                             if s != slot and _jaxpr.is_var(v))
    return tuple(found)


@_compiler.runs_once
def outputs(plans: tuple[Plan, ...], param_dynamic: Sequence[Any],
            arg_dynamic: Sequence[Any]) -> tuple[tuple[tuple[Any, ...], ...], tuple[Any, ...]]:
    """Each plan's values at θ (the plans of one loss), and the chains' other operands
    (`chain_operands`) there."""
    _, env = evaluate(plans[0].closed, [*param_dynamic, *arg_dynamic])
    values = tuple(tuple(env[p.output_var(k)] for k in range(len(p.cuts))) for p in plans)
    return values, tuple(env[v] for v in chain_operands(plans))


@_compiler.runs_once
def transposed(plans: tuple[Plan, ...], leaves: Sequence[Any], operands: Sequence[Any],
               per_output: Sequence[Sequence[Any]]) -> tuple:
    """Per plan, over its uses: Σ Pᵀ(dᵤ), Σ |P|ᵀ(rᵤ) and Σ (P²)ᵀ(rᵤ²), where `per_output[k]`
    holds plan k's dᵤ then its rᵤ ≥ 0 (each flat over its value): the leaf's derivatives from
    its values', a bound on what they carry of errors bounded by rᵤ, and the variance they
    carry of independent errors of standard deviation up to rᵤ. `leaves`: each plan's leaf;
    `operands`: the chains' other operands at θ (`outputs`)."""
    env = dict(zip(chain_operands(plans), operands))
    results = []
    for p, leaf, values in zip(plans, leaves, per_output):
        n = len(p.cuts)
        parts = ((values[:n], "value"), (values[n:], "abs"),
                 (tuple(r * r for r in values[n:]), "square"))
        found = []
        for part, mode in parts:
            total = jnp.zeros(leaf.size, leaf.dtype)
            for k, (cut, d) in enumerate(zip(p.cuts, part)):
                shape = p.output_var(k).aval.shape
                _, back = jax.vjp(
                    lambda w, p=p, cut=cut, mode=mode: _through(p, env, cut, w, mode), leaf)
                total = total + back(jnp.reshape(d, shape))[0].reshape(-1)
            found.append(total)
        results.append(tuple(found))
    return tuple(results)


def _through(p: Plan, env: dict, cut: Cut, w: Any, mode: str) -> Any:
    """The chain of `cut` applied to w, the other operands at θ ("value"). With every
    coefficient replaced by its magnitude ("abs") or its square ("square"): the other
    operands of products and quotients by theirs, a negation or a subtraction of w by a sum
    (a gather's indices stay), so that its transpose maps bounds to bounds, variances to
    variances."""
    jaxpr, value = p.closed.jaxpr, w
    power = {"value": None, "abs": jnp.abs, "square": jnp.square}[mode]
    for k, slot in zip(cut.chain, cut.slots):
        eqn = jaxpr.eqns[k]
        kind = _jaxpr.name(eqn)
        invals = [value if s == slot else v.val if _jaxpr.is_literal(v) else env[v]
                  for s, v in enumerate(eqn.invars)]
        if power is None:
            value = _jaxpr.bind(eqn, invals)
        elif kind == _jaxpr.NEG:
            continue
        elif kind == _jaxpr.SUB:
            value = jnp.add(*invals).astype(value.dtype)
        else:
            if kind in (_jaxpr.DOT, _jaxpr.CONV, _jaxpr.MUL, _jaxpr.DIV):
                invals = [x if s == slot else power(x) for s, x in enumerate(invals)]
            value = _jaxpr.bind(eqn, invals)
    return value
