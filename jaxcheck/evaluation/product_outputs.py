"""A leaf's derivatives through the outputs of its products: few points, each changing little.

A weight entry of an attention's query projection changes a column of every sequence's
queries, so every row of every attention map: followed through the loss, its change reaches
everything downstream. One entry of the projection's output, the queries, changes one row of
one attention map, one position downstream. Where every use of a leaf W is a product
Y = P(W) (a `dot_general`, a convolution or a row gather, after reshapes and transposes),
linear in W with its other operand at θ, the chain rule gives

    ∂f/∂W = Σ_uses Pᵀ(∂f/∂Y),

and ∂f/∂Y comes from central differences of the loss with that use's output Y given (the
product not evaluated: `OutputLoss`), entry by entry. Those may be more points than W has
entries, yet each is a change that stays local (`local_changes` follows it cheaply), where
W's own points each recompute everything downstream. `Plan.transpose` maps the differences
back through Pᵀ, exactly (JAX's transpose of the product, at θ), and `Plan.transpose_abs`
bounds their rounding: |P|ᵀ applied to each difference's rounding.

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

from .. import _jaxpr
from ..inputs.problem import Problem
from ..inputs.pytree import CARRIED, CHECKED, Structure


@dataclasses.dataclass(frozen=True)
class Cut:
    """One use of the leaf: the equations from the leaf to its product (reshapes,
    transposes, broadcasts, casts; the product last), and the product's operand that carries
    the leaf."""

    chain: tuple[int, ...]
    slots: tuple[int, ...]           # per equation of the chain, the operand carrying W

    @property
    def product(self) -> int:
        return self.chain[-1]

    @property
    def slot(self) -> int:
        return self.slots[-1]


def cuts(jaxpr: Any, position: int) -> tuple[Cut, ...] | None:
    """Every use of input `position` of `jaxpr`, each a product after moves (`Cut`), or None
    where some use is anything else, or the leaf (or a move of it) is an output, or it is
    read twice by one equation (W·W is not linear)."""
    outputs = {v for v in jaxpr.outvars if _jaxpr.is_var(v)}
    found: list[Cut] = []
    todo: list[tuple[Any, tuple[int, ...], tuple[int, ...]]] = [(jaxpr.invars[position], (), ())]
    while todo:
        var, chain, carried = todo.pop()
        if var in outputs:
            return None
        for k, eqn in enumerate(jaxpr.eqns):
            slots = [s for s, v in enumerate(eqn.invars) if v is var]
            if not slots:
                continue
            if len(slots) != 1:
                return None
            kind, slot = _jaxpr.name(eqn), slots[0]
            if kind in _jaxpr.LINEAR_MOVES and _moves_floats(eqn):
                todo.append((eqn.outvars[0], chain + (k,), carried + (slot,)))
            elif (kind in (_jaxpr.DOT, _jaxpr.CONV) and slot in (0, 1)) or \
                    (kind == _jaxpr.GATHER and slot == 0):
                found.append(Cut(chain + (k,), carried + (slot,)))
            else:
                return None
    return tuple(sorted(found, key=lambda c: c.product)) or None


def _moves_floats(eqn: Any) -> bool:
    """A move keeps a floating value floating (a cast to an integer is not linear)."""
    dtype = _jaxpr.var_dtype(eqn.outvars[0])
    return dtype is not None and bool(jnp.issubdtype(dtype, jnp.floating))


def evaluate(closed: Any, invals: Sequence[Any], given: dict[int, Any] | None = None
             ) -> tuple[Any, dict]:
    """`closed` evaluated equation by equation, the outputs of the equations in `given`
    (index → value) taken from it instead; (its one output, every variable's value)."""
    given = given or {}
    jaxpr, env = closed.jaxpr, {}

    def read(v: Any) -> Any:
        return v.val if _jaxpr.is_literal(v) else env[v]

    env.update(zip(jaxpr.constvars, closed.consts))
    env.update(zip(jaxpr.invars, invals))
    for k, eqn in enumerate(jaxpr.eqns):
        if k in given:
            outs = [given[k]]
        else:
            out = _jaxpr.bind(eqn, [read(v) for v in eqn.invars])
            outs = out if _jaxpr.multiple_results(eqn) else [out]
        env.update((v, x) for v, x in zip(eqn.outvars, outs) if not _jaxpr.is_dropped(v))
    return read(jaxpr.outvars[0]), env


@dataclasses.dataclass(frozen=True, eq=False)
class OutputLoss:
    """The loss with one product's output given: `fn((*param_dynamic, y), *arg_dynamic)`,
    the product at equation `product` not evaluated (hashed by identity, kept per problem
    and shapes: the key of its compiled programs)."""

    closed: Any
    product: int
    n_params: int

    def __call__(self, params_and_output: Sequence[Any], *arg_dynamic: Any) -> Any:
        *params, y = params_and_output
        out, _ = evaluate(self.closed, [*params, *arg_dynamic], {self.product: y})
        return out


def output_problem(closed: Any, cut: Cut, n_params: int, n_args: int) -> Problem:
    """The `Problem` of `OutputLoss` over the params (carried), the product's output y (the
    one checked leaf, last) and the args."""
    params = Structure(jax.tree_util.tree_structure(tuple(range(n_params + 1))),
                       (CARRIED,) * n_params + (CHECKED,), ())
    args = Structure(jax.tree_util.tree_structure(tuple(range(n_args))),
                     (CARRIED,) * n_args, ())
    return Problem(OutputLoss(closed, cut.product, n_params), params, args)


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """Leaf `position`'s uses as products, each with the loss over its product's output
    (found once per problem and shapes: the problems key their compiled programs)."""

    closed: Any
    position: int
    cuts: tuple[Cut, ...]
    problems: tuple[Problem, ...]

    def output_var(self, use: int) -> Any:
        return self.closed.jaxpr.eqns[self.cuts[use].product].outvars[0]


@dataclasses.dataclass(frozen=True, eq=False)
class AtTheta:
    """A plan at θ: its products' outputs there."""

    plan: Plan
    param_dynamic: tuple[Any, ...]
    outputs: tuple[Any, ...]

    def dynamic(self, use: int) -> tuple[Any, ...]:
        """The params of use `use`'s problem: the loss's params, and Y last (the same tuple
        at every call: the engine keys what it learns of the inputs by their ids)."""
        return self._dynamics[use]

    @functools.cached_property
    def _dynamics(self) -> tuple[tuple[Any, ...], ...]:
        return tuple((*self.param_dynamic, y) for y in self.outputs)


def plan(closed: Any, position: int, n_args: int) -> Plan | None:
    """Leaf `position`'s uses as products, or None where some use is not a product."""
    found = cuts(closed.jaxpr, position)
    if found is None:
        return None
    n_params = len(closed.jaxpr.invars) - n_args
    return Plan(closed, position, found,
                tuple(output_problem(closed, c, n_params, n_args) for c in found))


# The two programs of this path (`engine.call`: compiled once per plans and shapes), each
# over every leaf of a check that takes it, the loss evaluated once.

def outputs(plans: tuple[Plan, ...], param_dynamic: Sequence[Any],
            arg_dynamic: Sequence[Any]) -> tuple[tuple[Any, ...], ...]:
    """Each plan's products' outputs at θ (the plans of one loss)."""
    _, env = evaluate(plans[0].closed, [*param_dynamic, *arg_dynamic])
    return tuple(tuple(env[p.output_var(k)] for k in range(len(p.cuts))) for p in plans)


def transposed(plans: tuple[Plan, ...], param_dynamic: Sequence[Any],
               arg_dynamic: Sequence[Any], per_output: Sequence[Sequence[Any]]) -> tuple:
    """Per plan, Σ Pᵀ(dᵤ) and Σ |P|ᵀ(rᵤ) over its uses (flat over the leaf), where
    `per_output[k]` holds plan k's dᵤ then its rᵤ ≥ 0 (each flat over its output): the leaf's
    derivatives from its outputs', and a bound on what they carry of errors bounded by rᵤ."""
    _, env = evaluate(plans[0].closed, [*param_dynamic, *arg_dynamic])
    results = []
    for p, values in zip(plans, per_output):
        leaf = param_dynamic[p.position]
        n = len(p.cuts)
        both = []
        for part, absolute in ((values[:n], False), (values[n:], True)):
            total = jnp.zeros(leaf.size, leaf.dtype)
            for k, (cut, d) in enumerate(zip(p.cuts, part)):
                y = env[p.output_var(k)]
                _, back = jax.vjp(
                    lambda w, p=p, cut=cut, absolute=absolute: _through(p, env, cut, w, absolute),
                    leaf)
                total = total + back(jnp.reshape(d, y.shape))[0].reshape(-1)
            both.append(total)
        results.append(tuple(both))
    return tuple(results)


def _through(p: Plan, env: dict, cut: Cut, w: Any, absolute: bool) -> Any:
    """The chain of `cut` applied to w, the product's other operands at θ (their magnitudes
    where `absolute`: a row gather's indices stay as they are)."""
    jaxpr, value = p.closed.jaxpr, w
    for k, slot in zip(cut.chain, cut.slots):
        eqn = jaxpr.eqns[k]
        invals = [v.val if _jaxpr.is_literal(v) else env[v] for v in eqn.invars]
        invals[slot] = value
        if absolute and k == cut.product and _jaxpr.name(eqn) != _jaxpr.GATHER:
            invals = [x if s == slot else jnp.abs(x) for s, x in enumerate(invals)]
        value = _jaxpr.bind(eqn, invals)
    return value
