"""The host twins of the directions' hash and scales (`directions.signs_host`,
`pow2_at_or_above_host`) give the compiled ones' values bit for bit: the joint test builds its
points on the host, and its corrected screen reads the same directions back on the device."""
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
