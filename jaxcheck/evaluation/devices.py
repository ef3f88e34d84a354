"""Where perturbation batches run: every local device of the arrays' platform.

A batch of perturbations is split along its batch axis over a one-axis mesh with
`jax.shard_map`; the parameters and args are replicated. Each device evaluates its slice
with the same program, so the verdicts do not depend on the number of devices.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "perturbations"


def devices_for(arrays: Sequence[Any]) -> tuple[Any, ...]:
    """The local devices of the platform the (first) array lives on, e.g. all CPU devices."""
    platform = jax.default_backend()
    for x in arrays:
        if isinstance(x, jax.Array):
            platform = next(iter(x.devices())).platform
            break
    return tuple(jax.local_devices(backend=platform))


@functools.lru_cache(maxsize=8)
def mesh_of(devices: tuple[Any, ...]) -> Mesh:
    return Mesh(np.array(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def split_over(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(AXIS))


def shard_batch(f: Callable[..., Any], mesh: Mesh, n_points: int) -> Callable[..., Any]:
    """`f(shared, *points)` with the `n_points` arrays of `points` split over the mesh and
    `shared` replicated."""
    return jax.shard_map(f, mesh=mesh,
                         in_specs=(PartitionSpec(),) + (PartitionSpec(AXIS),) * n_points,
                         out_specs=PartitionSpec(AXIS))


def round_to_devices(batch: int, n_devices: int) -> int:
    """The smallest multiple of `n_devices` that is at least `batch`."""
    return -(-max(1, batch) // n_devices) * n_devices
