"""Random directions in one leaf, and batched evaluation of the loss along them.

Direction `i` of checked leaf `L`, restricted to the flat index range `[lo, hi)`, is

    uⱼ = rⱼ · max(1, |θⱼ|) / √(hi − lo)   for lo ≤ j < hi,   0 elsewhere,

with Rademacher signs rⱼ = ±1: the top bit of a counter-based hash of (seed, L, i, j), two
rounds of the lowbias32 integer mixer (C. Wellons, "Prospecting for hash functions", 2018),
which compiles in a fraction of the time of `jax.random`'s threefry under `vmap`. The scale
max(1, |θⱼ|) makes a step t along u move each component by t·max(1, |θⱼ|)/√m, the relative
step of full mode spread over m components; dividing by √m keeps ‖u‖ near 1 whatever the size
of the set, so the same step rule (t = ε^(1/3), Richardson at ε^(1/5)) serves a whole leaf and a
handful of components alike.

The signs are generated inside the compiled function from the direction's number, so no (k, n)
matrix of directions is ever stored: a row of a batch is just (number, lo, hi, t). As in
`_engine`, one leaf is perturbed at a time, batches have a fixed size, and the compiled programs
are keyed on the hashable `Problem` and the shapes, so repeated checks reuse them.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ._engine import Problem, choose_batch_size

# Points per compiled batch when memory allows: a test of k = 20 directions takes 2k = 40.
POINTS_PER_CALL = 64


def _mix(x):
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _direction(seed, leaf, number, lo, hi, theta):
    key = _mix(_mix(_mix(seed) ^ leaf) ^ number.astype(jnp.uint32))
    bits = _mix(_mix(jnp.arange(theta.size, dtype=jnp.uint32) ^ key) + key)
    signs = jnp.where((bits >> 31) == 1, 1, -1).astype(theta.dtype)
    iota = jnp.arange(theta.size, dtype=lo.dtype)
    inside = (iota >= lo) & (iota < hi)
    scale = jnp.maximum(1, jnp.abs(theta)) / jnp.sqrt((hi - lo).astype(theta.dtype))
    return jnp.where(inside, signs * scale, 0).astype(theta.dtype)


class Along(NamedTuple):
    """Per row: the loss at the point P = θ + t·u, and the analytic side of that row."""

    f: np.ndarray         # loss at P (rounded to the working dtype)
    g_step: np.ndarray    # g·(P − θ): the analytic change along the step actually taken
    gu: np.ndarray        # u·g
    spread: np.ndarray    # ‖u∘A‖, A the bound on the rounding of each gᵢ
    u_sum: np.ndarray     # Σ uᵢ (the one entry of u, for a single-component range)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _evaluate_batch(problem: Problem, position: int, param_dynamic, arg_dynamic, g, rounding,
                    seed, leaf, numbers, lo, hi, t):
    base = param_dynamic[position]
    theta = base.reshape(-1)

    def one(number, lo_, hi_, t_):
        u = _direction(seed, leaf, number, lo_, hi_, theta)
        point = theta + t_ * u
        dynamic = list(param_dynamic)
        dynamic[position] = point.reshape(base.shape)
        # elementwise products then sums: exact float32 on GPUs too (a dot could use TF32)
        return (problem.loss(dynamic, arg_dynamic), jnp.sum(g * (point - theta)),
                jnp.sum(u * g), jnp.sqrt(jnp.sum((u * rounding) ** 2)), jnp.sum(u))

    return jax.vmap(one)(numbers, lo, hi, t)


@jax.jit
def _vector(seed, leaf, number, lo, hi, theta):
    return _direction(seed, leaf, number, lo, hi, theta)


@dataclasses.dataclass
class Directions:
    """Evaluates the loss and the analytic gradient along directions of one leaf.

    Keeps a count of loss evaluations (`evaluations`) and of the direction numbers handed out
    (`fresh`), so that every test draws signs independent of the tests before it.
    """

    problem: Problem
    position: int
    param_dynamic: tuple[Any, ...]
    arg_dynamic: tuple[Any, ...]
    leaf_number: int
    seed: int
    g: np.ndarray                   # the analytic gradient of the leaf, flat, float64
    rounding: np.ndarray            # bound on the rounding of each gᵢ (`_verdicts`)
    batch_size: int | None = None
    evaluations: int = 0
    issued: int = 0

    def __post_init__(self) -> None:
        leaf = self.param_dynamic[self.position]
        self.theta = jnp.asarray(leaf).reshape(-1)
        self.dtype = np.dtype(leaf.dtype)
        self.g_device = jnp.asarray(self.g.astype(self.dtype))
        self.rounding_device = jnp.asarray(self.rounding.astype(self.dtype))
        self.size = int(self.theta.size)
        # One batch size for every call on this leaf, so each function compiles once.
        self.batch = choose_batch_size(self.size, self.dtype.itemsize, POINTS_PER_CALL,
                                       self.batch_size)

    def _batches(self, numbers, lo, hi, t):
        """Rows padded to a multiple of the batch size, cut into batches (device arrays)."""
        m = len(numbers)
        pad = (-m) % self.batch
        # padding rows are direction 0 on the whole leaf at t = 0; their results are dropped
        cols = [np.concatenate([np.asarray(x), np.full(pad, fill)]).astype(dtype)
                for x, fill, dtype in ((numbers, 0, np.int32), (lo, 0, np.int32),
                                       (hi, self.size, np.int32), (t, 0.0, self.dtype))]
        for s in range(0, m + pad, self.batch):
            yield [jnp.asarray(c[s:s + self.batch]) for c in cols]

    def fresh(self, k: int) -> np.ndarray:
        """k direction numbers not used before in this leaf."""
        numbers = np.arange(self.issued, self.issued + k, dtype=np.int32)
        self.issued += k
        return numbers

    def _keys(self):
        return (jnp.asarray(self.seed, jnp.uint32), jnp.asarray(self.leaf_number, jnp.uint32))

    def along(self, numbers: np.ndarray, lo: np.ndarray, hi: np.ndarray,
              t: np.ndarray) -> Along:
        """The loss at θ + t·u (rounded to the working dtype) and the analytic side, per row."""
        m = len(numbers)
        seed, leaf = self._keys()
        outs = [  # dispatched asynchronously; gathered below
            _evaluate_batch(self.problem, self.position, tuple(self.param_dynamic),
                            tuple(self.arg_dynamic), self.g_device, self.rounding_device,
                            seed, leaf, n_, l_, h_, t_)
            for n_, l_, h_, t_ in self._batches(numbers, lo, hi, t)
        ]
        self.evaluations += m
        return Along(*(np.concatenate([np.asarray(o[i], np.float64).reshape(-1) for o in outs]
                                      + [np.zeros(0)])[:m] for i in range(5)))

    def vector(self, number: int, lo: int, hi: int) -> np.ndarray:
        """Direction `number` on `[lo, hi)` as a flat array of the working dtype."""
        seed, leaf = self._keys()
        return np.asarray(_vector(seed, leaf, jnp.asarray(number, jnp.int32),
                                  jnp.asarray(lo, jnp.int32), jnp.asarray(hi, jnp.int32),
                                  self.theta))

    def at(self, point: np.ndarray) -> Sequence[Any]:
        """The params' dynamic leaves with this leaf set to the flat `point`."""
        dynamic = list(self.param_dynamic)
        dynamic[self.position] = jnp.asarray(point.reshape(self.param_dynamic[self.position].shape))
        return dynamic
