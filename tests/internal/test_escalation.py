"""The escalation on a line whose noise and derivatives are known exactly."""
import numpy as np

from jaxcheck.numerics import escalation
from jaxcheck.numerics.verdicts import FAIL, PASS


class _Line:
    """f(t) = t³ + 2t along each line, with rounding noise of standard deviation `sigma`."""

    def __init__(self, sigma: float, slope_error: float = 0.0):
        self.rng, self.sigma, self.slope_error = np.random.default_rng(0), sigma, slope_error

    def losses(self, rows, offsets, strict=True):
        t = np.asarray(offsets, np.float64)
        return t**3 + 2 * t + self.sigma * self.rng.standard_normal(t.shape), t

    def slopes(self, rows, offsets):
        return 3 * np.asarray(offsets) ** 2 + 2


def _decide(line, g, eps):
    h = np.full(g.size, eps ** (1 / 3))
    f, _ = line.losses(np.arange(g.size), np.concatenate([h, -h]))
    first = escalation.Level(f[:g.size], f[g.size:], h, h)
    return escalation.decide(line, g, np.zeros(g.size), 0.0, first, np.full(g.size, 1e-4),
                              eps, 3.0)


def test_escalation_measures_noise_before_it_fails_a_derivative():
    # noise 1e3× ε·|f|: the screen alone would fail the right slope 2; with the noise
    # measured, 2 passes and 2.001 still fails
    eps = 2.0**-52
    noisy = _decide(_Line(sigma=1e-12), np.array([2.0, 2.0, 2.001]), eps)
    assert noisy.noise > 1e-13
    assert list(noisy.verdicts.status) == [PASS, PASS, FAIL]
