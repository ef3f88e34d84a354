"""The tolerance of a kernel against its reference (`numerics.reference_comparison`): measured
rounding widens it, a bug's own error does not."""
import numpy as np

from jaxcheck.numerics.reference_comparison import ForwardComparison, rounding_tolerance

EPS = 2.0 ** -23
JITTER = np.array([0.0, 1e-6, -1e-6, 1e-4, -1e-4, 4e-3, -4e-3])   # the user's, then pairs


def _points(rng, n=200):
    """A reference gradient along the jittered points, and float32-like rounding noise."""
    reference = 1.0 + 0.5 * np.sin(np.arange(n))[None, :] * (1 + JITTER[:, None])
    noise = 30 * EPS * rng.standard_normal((len(JITTER), n))
    return reference, noise


def test_rounding_noise_is_inside_its_own_tolerance():
    rng = np.random.default_rng(0)
    reference, noise = _points(rng)
    kernel = reference + noise
    tol = rounding_tolerance(kernel, reference, reference, EPS, safety=3.0)
    assert np.all(np.abs(kernel[0] - reference[0]) <= tol)
    assert np.median(tol) < 1e-4 * np.median(np.abs(reference[0]))   # not a loose bound


def test_a_bug_smooth_in_the_jitter_does_not_widen_its_tolerance():
    rng = np.random.default_rng(1)
    _, noise = _points(rng)
    # a gradient that changes fast with the point (large logits): 2.2x at the widest jitter
    reference = (1.0 + 0.5 * np.sin(np.arange(200)))[None, :] * (1 + 300 * JITTER[:, None])
    bug = 1e-3 * reference            # a wrong scale: its error moves with the point, and the
    kernel = reference + bug + noise  # antithetic pairs cancel that
    tol = rounding_tolerance(kernel, reference, reference, EPS, safety=3.0)
    assert np.all(np.abs(kernel[0] - reference[0]) > tol)


def test_the_reference_rounded_in_native_precision_widens_the_tolerance():
    rng = np.random.default_rng(2)
    reference, _ = _points(rng)
    narrow = rounding_tolerance(reference, reference, reference, EPS, safety=3.0)
    wide = rounding_tolerance(reference, reference, reference + 1e-4, EPS, safety=3.0)
    np.testing.assert_allclose(wide - narrow, 3e-4)


def test_a_point_that_overflowed_carries_no_rounding_information():
    rng = np.random.default_rng(3)
    reference, noise = _points(rng)
    kernel = reference + noise
    kernel[5, 7] = np.nan
    tol = rounding_tolerance(kernel, reference, reference, EPS, safety=3.0)
    assert np.all(np.isfinite(tol))


def test_the_forward_agrees_only_where_every_point_agrees():
    near = ForwardComparison((1.0, 2.0, 3.0), (1.0, 2.0, 3.1), (0.0, 1e-3, -1e-3), 1e-3)
    assert near.value_ok and not near.ok
    lost = ForwardComparison((1.0, np.nan), (1.0, np.nan), (0.0, 1e-3), 1e-3)
    assert lost.ok                    # the reference overflowed there too: no information
    kernel_only = ForwardComparison((1.0, np.inf), (1.0, 2.0), (0.0, 1e-3), 1e-3)
    assert not kernel_only.ok
