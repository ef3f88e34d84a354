"""`argnums`, `has_aux` and framework objects, mapped onto the canonical `fn(params, *args)`.

The core of `check` knows one form: a scalar loss of a pytree `params`, every floating leaf of
which is checked, and of further arguments, none of which is. `canonical` maps the other forms
onto it before the core runs, so the core itself does not know about frameworks:

- `argnums` picks which entries of the tuple `(params, *args)` are checked (so the default 0 is
  `params`, and `argnums=1` is the first of `args`). An int gives paths as in that entry alone;
  a tuple gives paths that start with the entry's position: `[0]['W']`, `[2]`.
- `has_aux`: `fn` returns `(loss, aux)` and `grad_fn` returns `(grad, aux)`; aux is ignored.
- Flax nnx: a `Module` is split with `nnx.split(module, nnx.Param, ...)`; the `Param`s are
  checked, the rest (`BatchStat`, RNG keys and counts) is carried. Every evaluation gets a
  fresh module from `nnx.merge(..., copy=True)`, so every perturbation starts from the same
  RNG state (the same dropout mask) and the user's module is never touched.
- an `nnx.State` (from `nnx.split`) is checked whole, its paths written like the module's;
- Flax linen: variables `{"params": ..., "batch_stats": ..., ...}` (a mapping with a
  `"params"` key whose values are all mappings): only `"params"` is checked.
- Equinox: a `Module` is partitioned with `eqx.is_inexact_array`; the other half (static
  fields, activations, int arrays, Python numbers) is kept as it is and never checked.

Whatever is not checked travels as an argument of the canonical loss, where the core carries
it unchanged (a float there is never perturbed).

```python
>>> import jax.numpy as jnp, jaxcheck
>>> def loss(w, b, x):                       # (params, *args) = (w, b, x)
...     return jnp.sum(jnp.tanh(x * w + b) ** 2)
>>> w, b, x = jnp.ones(2), jnp.zeros(2), jnp.array([0.5, -1.0])
>>> [leaf.path for leaf in jaxcheck.check(loss, w, b, x, argnums=1).leaves]   # b alone
['']
>>> [leaf.path for leaf in jaxcheck.check(loss, w, b, x, argnums=(0, 2)).leaves]
['[0]', '[2]']

```
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import jax
from jax.tree_util import DictKey, GetAttrKey, SequenceKey

from .pytree import is_checkable

Argnums = Union[int, tuple[int, ...]]  # noqa: UP007 - a runtime alias, evaluated on 3.10


# --- readable paths ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Label:
    """A pytree key that prints as a ready-made path, e.g. `.layers[0].kernel`."""

    text: str

    def __str__(self) -> str:
        return self.text


class Labelled:
    """Arrays named by their natural paths: what is checked of an nnx module."""

    def __init__(self, labels: tuple[str, ...], leaves: tuple[Any, ...]) -> None:
        self.labels, self.leaves = labels, leaves

    def __repr__(self) -> str:
        return f"Labelled({list(self.labels)})"


jax.tree_util.register_pytree_with_keys(
    Labelled,
    lambda t: ([(_Label(s), x) for s, x in zip(t.labels, t.leaves)], t.labels),
    lambda labels, leaves: Labelled(labels, tuple(leaves)),
    lambda t: (t.leaves, t.labels),
)


def attribute_path(keys: Sequence[Any]) -> str:
    """`.layers[0].kernel` for the keys of `['layers'][0]['kernel'].value` (an nnx State)."""
    keys = list(keys)
    if keys and isinstance(keys[-1], GetAttrKey) and keys[-1].name == "value":
        keys = keys[:-1]  # the array inside an nnx.Variable
    out = []
    for k in keys:
        if isinstance(k, DictKey) and isinstance(k.key, str) and k.key.isidentifier():
            out.append(f".{k.key}")
        elif isinstance(k, DictKey):
            out.append(f"[{k.key!r}]")
        elif isinstance(k, SequenceKey):
            out.append(f"[{k.idx}]")
        elif isinstance(k, GetAttrKey):
            out.append(f".{k.name}")
        else:
            out.append(str(k))
    return "".join(out)


# --- one entry of (params, *args) --------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Plain:
    """Any pytree: checked as it is when selected, carried as it is when not."""

    selected: bool

    def rebuild(self, checked: Any, carried: Any) -> Any:
        return checked if self.selected else carried

    def gradient(self, g: Any) -> Any:
        return g


@dataclasses.dataclass(frozen=True)
class _Nnx:
    """A Flax nnx graph node, rebuilt as a fresh copy for every evaluation."""

    graphdef: Any
    params: Any = None        # treedef of the nnx.Param state; None when not selected
    labels: tuple[str, ...] = ()
    required: tuple[str, ...] = ()  # the labels of floating leaves, which are checked

    def rebuild(self, checked: Any, carried: Any) -> Any:
        from flax import nnx

        if self.params is None:
            return nnx.merge(self.graphdef, carried, copy=True)
        state = jax.tree_util.tree_unflatten(self.params, checked.leaves)
        return nnx.merge(self.graphdef, state, carried, copy=True)

    def gradient(self, g: Any) -> Any:
        """`nnx.grad`'s `State` of Params, a module of grads, or its pure dict, by path."""
        from flax import nnx

        if _is_nnx_node(g):
            g = nnx.state(g, nnx.Param)
        elif isinstance(g, nnx.State):
            g = g.filter(nnx.Param)
        return _by_label(g, self.labels, self.required, "the gradient of every nnx.Param of "
                         "the module (an nnx.State as nnx.grad returns, or a module of "
                         "gradients)")


@dataclasses.dataclass(frozen=True)
class _NnxState:
    """An `nnx.State` passed as params: all its floating leaves checked, under nice paths."""

    treedef: Any
    labels: tuple[str, ...]
    required: tuple[str, ...]

    def rebuild(self, checked: Any, carried: Any) -> Any:
        return jax.tree_util.tree_unflatten(self.treedef, checked.leaves)

    def gradient(self, g: Any) -> Any:
        return _by_label(g, self.labels, self.required, "an nnx.State (or its pure dict) "
                         "with the gradient of every floating leaf of params")


def _by_label(g: Any, labels: tuple[str, ...], required: tuple[str, ...], what: str) -> Any:
    """The leaves of `g` under `labels`, matched by path (State, pure dict or module)."""
    given = {attribute_path(p): x for p, x in jax.tree_util.tree_flatten_with_path(g)[0]}
    missing = [s for s in required if s not in given]
    if missing:
        raise ValueError(
            f"grad_fn: expected {what}; missing {', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''}; got leaves "
            f"{', '.join(list(given)[:6]) or 'none'}")
    # Leaves that are not checked (ints, keys) are never read: None stands in for them.
    return Labelled(labels, tuple(given.get(s) for s in labels))


@dataclasses.dataclass(frozen=True)
class _Linen:
    """Flax linen variables: `"params"` checked, the other collections carried."""

    keys: tuple[str, ...]     # the collections, in the user's order
    kind: type

    def rebuild(self, checked: Any, carried: Any) -> Any:
        merged = {k: checked["params"] if k == "params" else carried[k] for k in self.keys}
        return merged if self.kind is dict else self.kind(merged)

    def gradient(self, g: Any) -> Any:
        """Gradients of the whole variables (only `"params"` is read) or of `"params"`."""
        if isinstance(g, Mapping) and "params" in g:
            return {"params": g["params"]}
        return {"params": g}


@dataclasses.dataclass(frozen=True)
class _Equinox:
    """An Equinox module: its inexact arrays checked, the rest (static half) carried."""

    def rebuild(self, checked: Any, carried: Any) -> Any:
        import equinox as eqx

        return eqx.combine(checked, carried)

    def gradient(self, g: Any) -> Any:
        """A module of gradients (as `eqx.filter_grad` returns; non-arrays None)."""
        import equinox as eqx

        return eqx.filter(g, eqx.is_inexact_array)


def _is_nnx_node(x: Any) -> bool:
    if "flax" not in sys.modules:  # never import flax for users who do not use it
        return False
    from flax import nnx

    return isinstance(x, (nnx.Module, nnx.Rngs)) or (
        nnx.graph.is_graph_node(x) and not isinstance(x, nnx.State))


def _is_equinox_module(x: Any) -> bool:
    if "equinox" not in sys.modules:
        return False
    import equinox as eqx

    return isinstance(x, eqx.Module)


def _is_linen_variables(x: Any) -> bool:
    return (isinstance(x, Mapping) and "params" in x
            and all(isinstance(k, str) and isinstance(v, Mapping) for k, v in x.items()))


def _labelled(with_paths: Sequence[tuple[Any, Any]]) -> Labelled:
    return Labelled(tuple(attribute_path(p) for p, _ in with_paths),
                    tuple(v for _, v in with_paths))


def _required(t: Labelled) -> tuple[str, ...]:
    return tuple(s for s, x in zip(t.labels, t.leaves) if is_checkable(x))


def _is_nnx_state(x: Any) -> bool:
    if "flax" not in sys.modules:
        return False
    from flax import nnx

    return isinstance(x, nnx.State)


def _adapt(x: Any, selected: bool) -> tuple[Any, Any, Any]:
    """(adapter, checked part, carried part) of one entry of `(params, *args)`."""
    if _is_nnx_node(x):
        from flax import nnx

        if not selected:
            graphdef, state = nnx.split(x)
            return _Nnx(graphdef), None, state
        graphdef, params, rest = nnx.split(x, nnx.Param, ...)
        with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
        checked = _labelled(with_paths)
        return _Nnx(graphdef, treedef, checked.labels, _required(checked)), checked, rest
    if selected and _is_nnx_state(x):
        with_paths, treedef = jax.tree_util.tree_flatten_with_path(x)
        checked = _labelled(with_paths)
        return _NnxState(treedef, checked.labels, _required(checked)), checked, None
    if selected and _is_equinox_module(x):
        import equinox as eqx

        dynamic, static = eqx.partition(x, eqx.is_inexact_array)
        return _Equinox(), dynamic, static
    if selected and _is_linen_variables(x):
        rest = {k: v for k, v in x.items() if k != "params"}
        return _Linen(tuple(x.keys()), type(x)), {"params": x["params"]}, rest
    return _Plain(selected), (x if selected else None), (None if selected else x)


# --- the canonical loss and gradient --------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Entries:
    """How the user's `(params, *args)` come back from (checked, *carried)."""

    adapters: tuple[Any, ...]
    argnums: tuple[int, ...]
    single: bool              # argnums was an int: `checked` is that entry's part itself

    def objects(self, checked: Any, carried: Sequence[Any]) -> list[Any]:
        parts = {self.argnums[0]: checked} if self.single else checked
        return [a.rebuild(parts.get(i), c)
                for i, (a, c) in enumerate(zip(self.adapters, carried))]


def _describe(out: Any) -> str:
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)} elements"
    shape = getattr(out, "shape", None)
    return f"an array of shape {tuple(shape)}" if shape is not None else type(out).__name__


def _primary(out: Any, has_aux: bool, who: str, what: str) -> Any:
    if has_aux:
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise ValueError(f"{who}: has_aux=True expects {who} to return a pair "
                             f"({what}, aux); got {_describe(out)}")
        return out[0]
    return out


@dataclasses.dataclass(frozen=True)
class _Loss:
    fn: Callable[..., Any]
    entries: _Entries
    has_aux: bool

    def __call__(self, checked: Any, *carried: Any) -> Any:
        out = self.fn(*self.entries.objects(checked, carried))
        if not self.has_aux and isinstance(out, (tuple, list)):
            raise ValueError(f"fn: expected a scalar loss, got {_describe(out)}; if fn "
                             "returns (loss, aux), pass has_aux=True")
        return _primary(out, self.has_aux, "fn", "loss")


@dataclasses.dataclass(frozen=True)
class _Gradient:
    grad_fn: Callable[..., Any]
    entries: _Entries
    has_aux: bool

    def __call__(self, checked: Any, *carried: Any) -> Any:
        out = self.grad_fn(*self.entries.objects(checked, carried))
        g = _primary(out, self.has_aux, "grad_fn", "grad")
        e = self.entries
        if e.single:
            return e.adapters[e.argnums[0]].gradient(g)
        if not (isinstance(g, (tuple, list)) and len(g) == len(e.argnums)):
            raise ValueError(f"grad_fn: with argnums={e.argnums} expected a tuple of "
                             f"{len(e.argnums)} gradients, one per argument (as jax.grad "
                             f"returns); got {_describe(g)}")
        return {k: e.adapters[k].gradient(gk) for k, gk in zip(e.argnums, g)}


def positions(argnums: Argnums, n: int) -> tuple[int, ...]:
    """`argnums` as non-negative positions in `(params, *args)` (n entries), validated."""
    given = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    if any(not -n <= k < n for k in given):
        raise ValueError(
            f"argnums: expected positions in (params, *args), which has {n} entries "
            f"(0 to {n - 1}, or -{n} to -1); got {argnums!r}")
    out = tuple(k % n for k in given)
    if len(set(out)) != len(out):
        raise ValueError(f"argnums: expected distinct positions; got {argnums!r}")
    return out


def canonical(fn: Callable[..., Any], params: Any, args: tuple[Any, ...],
              grad_fn: Callable[..., Any] | None, argnums: Argnums, has_aux: bool
              ) -> tuple[Callable[..., Any], Any, tuple[Any, ...], Callable[..., Any] | None]:
    """`(fn, params, args, grad_fn)` in the core's form: `fn(checked, *carried) -> scalar`.

    `checked` holds exactly what is checked (its key paths are the report's paths), `carried`
    one entry per entry of `(params, *args)` with what is not.
    """
    entries = (params, *args)
    selected = positions(argnums, len(entries))
    adapted = [_adapt(x, i in selected) for i, x in enumerate(entries)]
    single = isinstance(argnums, int)
    e = _Entries(tuple(a for a, _, _ in adapted), selected, single)
    checked = adapted[selected[0]][1] if single else {k: adapted[k][1] for k in selected}
    carried = tuple(c for _, _, c in adapted)
    grad = None if grad_fn is None else _Gradient(grad_fn, e, has_aux)
    return _Loss(fn, e, has_aux), checked, carried, grad
