"""The host twins of the directions' hash and scales (`directions.signs_host`,
`pow2_at_or_above_host`) give the compiled ones' values bit for bit: the joint test builds its
points on the host (`joint.HostDirections`), and its corrected screen reads the same
directions back on the device (`joint._direction_entries`)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcheck.evaluation.directions import (
    pow2_at_or_above,
    pow2_at_or_above_host,
    signs,
    signs_at,
    signs_host,
)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [1, 31, 32, 33, 1000])
def test_host_signs_are_the_compiled_signs(n, dtype):
    numbers = np.array([0, 1, 5, 1 << 30, (1 << 30) + 21, (1 << 31) - 1])
    with jax.enable_x64(True):
        compiled = np.stack([np.asarray(signs(jnp.uint32(12345), jnp.uint32(0xFFFFFFFF),
                                              jnp.int64(k), n, dtype)) for k in numbers])
        at = np.asarray(signs_at(jnp.uint32(12345), jnp.uint32(0xFFFFFFFF),
                                 jnp.asarray(numbers)[:, None], jnp.arange(n)[None, :], dtype))
    host = signs_host(12345, 0xFFFFFFFF, numbers, n, dtype)
    assert host.dtype == np.dtype(dtype) and host.shape == (len(numbers), n)
    assert np.array_equal(host, compiled) and np.array_equal(host, at)
    assert set(np.unique(host)) == {-1.0, 1.0}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_host_powers_of_two_are_the_compiled_ones(dtype):
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal(2000)) * 10.0 ** rng.uniform(-3, 6, 2000)
    x = np.maximum(1, np.concatenate([x, [1, 2, 3, 4, 1024, 1025]])).astype(dtype)
    with jax.enable_x64(True):
        compiled = np.asarray(pow2_at_or_above(jnp.asarray(x)))
    host = pow2_at_or_above_host(x)
    assert host.dtype == x.dtype and np.array_equal(host, compiled)
    assert np.all((host >= x) & (host < 2 * x))


def test_host_joint_points_move_along_the_directions_the_device_reads_back():
    # Two leaves of dyadic values, so that θ + t·u is exact: the joint test's points, built
    # on the host, move each entry by t·uⱼ with uⱼ as `_direction_entries` computes it on the
    # device for the corrected screen (the concatenated key, the flat index over all leaves).
    from jaxcheck.numerics import joint

    rng = np.random.default_rng(1)
    leaves = [rng.integers(-64, 64, size=s).astype(np.float64) / 8 for s in (300, 45)]
    gs = [rng.standard_normal(x.size) for x in leaves]
    t, seed, numbers = 2.0 ** -10, 7, np.array([joint.JOINT_NUMBERS, joint.JOINT_NUMBERS + 5])
    rows = joint.Rows.joint(numbers, t, np.ones(2, bool))
    with jax.enable_x64(True):
        host = joint.HostDirections([0, 1], leaves, gs, [np.zeros(2)] * 2, [None, None], seed, t)
        (plus, minus), g_step, gus = host.rows(rows)
        offsets = [0, 300]
        for i, theta in enumerate(leaves):
            index = np.arange(theta.size)
            u = np.asarray(joint._direction_entries(
                np.uint32(seed), np.uint32(joint.CONCATENATED_KEY), numbers.astype(np.int32),
                (offsets[i] + index).astype(np.int32), theta, np.float64(theta.size)))
            part = slice(offsets[i], offsets[i] + theta.size)
            assert np.array_equal(plus[:, part] - theta, t * u)
            assert np.array_equal(minus[:, part] - theta, -t * u)
            assert np.allclose(gus[:, i], u @ gs[i], rtol=1e-13)
    assert np.allclose(g_step[:, 0], t * gus.sum(axis=1), rtol=1e-13)
