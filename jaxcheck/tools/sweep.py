"""The ε sweep: how the error of finite differences depends on the step, per dtype.

The error of a difference quotient is truncation (∝ ε for one-sided, ∝ ε² for two-sided) plus
round-off (∝ machine-ε·|f|/ε): on a log-log plot a V whose bottom is the best step, ~ε_mach^(1/2)
one-sided and ~ε_mach^(1/3) two-sided. The sweep measures it along one direction u (‖u‖ = 1)
in the space of all floating params: the numerical directional derivative at each ε against
the analytic one, ∇f·u, computed in float64.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..evaluation import engine
from ..inputs.callables import keyed
from ..inputs.precision import cast_floating
from ..inputs.problem import Problem
from ..inputs.pytree import replace_dynamic, split
from ..plan.gradients import AnalyticGradient

# 1e-1, 10^-1.5, ..., 1e-12: the classic range, half a decade apart.
DEFAULT_EPS = tuple(float(10.0 ** -k) for k in np.arange(1.0, 12.25, 0.5))
DEFAULT_DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True, eq=False)
class Sweep:
    """Finite differences along one direction, over steps `eps` and `dtypes`.

    - `eps`: the steps (absolute, along the unit direction u), shape (m,).
    - `dtypes`: the dtypes `fn` was evaluated in (params and floating args cast to each).
    - `analytic`: ∇f·u from the analytic gradient, in float64.
    - `two_sided`, `one_sided`: shape (len(dtypes), m), the estimates
      (f(θ+εu) − f(θ−εu))/2ε and (f(θ+εu) − f(θ))/ε.
    """

    eps: np.ndarray
    dtypes: tuple[str, ...]
    analytic: float
    two_sided: np.ndarray
    one_sided: np.ndarray

    @property
    def two_sided_error(self) -> np.ndarray:
        """|two_sided − analytic|, shape (len(dtypes), m)."""
        return np.abs(self.two_sided - self.analytic)

    @property
    def one_sided_error(self) -> np.ndarray:
        """|one_sided − analytic|, shape (len(dtypes), m)."""
        return np.abs(self.one_sided - self.analytic)

    def best_eps(self, dtype: str = "float64", method: str = "two_sided") -> float:
        """The measured step with the smallest error for `dtype` and `method`
        (`"two_sided"` or `"one_sided"`)."""
        if dtype not in self.dtypes:
            raise ValueError(f"dtype: expected one of {self.dtypes}, got {dtype!r}")
        if method not in ("two_sided", "one_sided"):
            raise ValueError(f"method: expected 'two_sided' or 'one_sided', got {method!r}")
        errors = getattr(self, method + "_error")[self.dtypes.index(dtype)]
        return float(self.eps[int(np.nanargmin(errors))])

    def plot(self, ax: Any = None) -> Any:
        """Draw error vs ε on log-log axes (one V per dtype and method); returns the axes.

        Needs matplotlib: `pip install jaxcheck[plot]`.
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError as e:
            raise ImportError("Sweep.plot needs matplotlib; install it with "
                              "`pip install jaxcheck[plot]`") from e
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        floor = np.finfo(np.float64).tiny  # an exact difference would vanish on a log axis
        for k, dtype in enumerate(self.dtypes):
            for method, style in (("two_sided", "-o"), ("one_sided", "--s")):
                errors = np.maximum(getattr(self, method + "_error")[k], floor)
                ax.loglog(self.eps, errors, style, markersize=3,
                          label=f"{method.replace('_', '-')} {dtype} "
                                f"(best ε={self.best_eps(dtype, method):.0e})")
        ax.set_xlabel("ε")
        ax.set_ylabel("|numerical − analytic|")
        ax.set_title(f"finite-difference error along u (∇f·u = {self.analytic:.6g})")
        ax.legend(fontsize="small")
        return ax


def _direction(sizes: Sequence[int], seed: int) -> np.ndarray:
    n = int(sum(sizes))
    if n == 1:
        return np.ones(1)
    u = np.random.default_rng(seed).standard_normal(n)
    return u / np.linalg.norm(u)


@dataclasses.dataclass(frozen=True)
class CheckedLeavesAt(engine.Kernel):
    """The loss with the checked leaves set to given values: a point is one value per leaf."""

    problem: Problem
    checked: tuple[int, ...]

    def point_specs(self, shared):
        return tuple(jax.ShapeDtypeStruct(shared[0][i].shape, shared[0][i].dtype)
                     for i in self.checked)

    def copied_bytes(self, shared):
        return sum(int(shared[0][i].size) * shared[0][i].dtype.itemsize for i in self.checked)

    def variants(self, shared):
        return [self._one]

    def _one(self, shared, *values):
        dynamic = list(shared[0])
        for i, value in zip(self.checked, values):
            dynamic[i] = value
        return self.problem.loss(dynamic, shared[1])


def _values_along(fn: Callable[..., Any], params: Any, args: tuple, direction: np.ndarray,
                  steps: np.ndarray, dtype: str) -> np.ndarray:
    """fn at θ + s·u for each s in `steps`, with floating params and args in `dtype`."""
    with jax.enable_x64(np.dtype(dtype).itemsize > 4):
        p = split(params)
        a = split(args, check_floats=False)
        p = replace_dynamic(p, [cast_floating(x, dtype) for x in p.dynamic])
        a = replace_dynamic(a, [cast_floating(x, dtype) for x in a.dynamic])
        problem = Problem(fn, p.structure, a.structure)
        theta = [np.asarray(p.dynamic[i], np.float64).reshape(-1) for i in p.checked]
        bounds = np.cumsum([0] + [t.size for t in theta])
        # The points θ + s·u rounded to `dtype`, as the classic recipe takes them.
        points = [[jnp.asarray(t + s * direction[lo:hi]).astype(dtype).reshape(
                       p.dynamic[i].shape)
                   for t, i, lo, hi in zip(theta, p.checked, bounds[:-1], bounds[1:])]
                  for s in steps]
        stacked = [jnp.stack([pt[k] for pt in points]) for k in range(len(theta))]

        kernel = CheckedLeavesAt(problem, tuple(p.checked))
        return engine.run(kernel, (tuple(p.dynamic), tuple(a.dynamic)), stacked,
                          len(steps))


def sweep(fn: Callable[..., Any], params: Any, *args: Any,
          grad_fn: Callable[..., Any] | None = None, eps: Sequence[float] = DEFAULT_EPS,
          dtypes: Sequence[str] = DEFAULT_DTYPES, seed: int = 0) -> Sweep:
    """Errors of one- and two-sided differences against the analytic gradient, over ε.

    **Arguments:**

    - `fn`, `params`, `*args`, `grad_fn`: as for `jaxcheck.check`.
    - `eps`: the steps to try (default 1e-1 … 1e-12, half a decade apart).
    - `dtypes`: the dtypes to evaluate `fn` in (default float32 and float64).
    - `seed`: seed of the random unit direction u (a single parameter is swept along +1).

    **Returns:** a `jaxcheck.Sweep`; `.plot()` draws the V-shaped error curves.

    **Example:** f(θ) = θ³ at θ = 1, where f'(1) = 3:

    ```python
    >>> import jaxcheck
    >>> s = jaxcheck.sweep(lambda t: t ** 3, 1.0, eps=[1e-2], dtypes=["float64"])
    >>> round(float(s.two_sided[0, 0]), 10), round(float(s.one_sided[0, 0]), 10)
    (3.0001, 3.0301)
    >>> f"{s.two_sided_error[0, 0]:.1e}", f"{s.one_sided_error[0, 0]:.4f}"
    ('1.0e-04', '0.0301')
    >>> s = jaxcheck.sweep(lambda t: t ** 3, 1.0)
    >>> s.best_eps("float64") < s.best_eps("float32") < 1e-1
    True

    ```
    """
    if not callable(fn):
        raise TypeError(f"fn: expected a callable loss fn(params, *args), got {type(fn).__name__}")
    fn = keyed(fn)
    steps = np.asarray(eps, np.float64).reshape(-1)
    if steps.size == 0 or not np.all((steps > 0) & np.isfinite(steps)):
        raise ValueError(f"eps: expected a non-empty sequence of positive steps, got {eps!r}")
    for dtype in dtypes:
        if not jnp.issubdtype(np.dtype(dtype), jnp.floating):
            raise ValueError(f"dtypes: expected floating dtypes, got {dtype!r}")
    dtypes = tuple(np.dtype(dtype).name for dtype in dtypes)
    with jax.enable_x64(True):
        p = split(params)
        if not p.checked:
            raise ValueError("params: expected a pytree with at least one floating-point "
                             "array leaf to sweep")
        a = split(args, check_floats=False)
        p = replace_dynamic(p, [cast_floating(x, jnp.float64) for x in p.dynamic])
        a = replace_dynamic(a, [cast_floating(x, jnp.float64) for x in a.dynamic])
        gradient = AnalyticGradient(Problem(fn, p.structure, a.structure), p,
                                    tuple(a.dynamic), grad_fn)
        g = np.concatenate([x.reshape(-1) for x in gradient.leaves()])
    u = _direction([np.size(x) for x in p.checked_values], seed)
    two, one = [], []
    for dtype in dtypes:
        # One batch: θ, then θ + εu and θ − εu for every ε.
        values = _values_along(fn, params, args, u,
                               np.concatenate([[0.0], steps, -steps]), dtype)
        f0, fp, fm = values[0], values[1:steps.size + 1], values[steps.size + 1:]
        two.append((fp - fm) / (2 * steps))
        one.append((fp - f0) / steps)
    return Sweep(steps, dtypes, float(g @ u), np.stack(two), np.stack(one))
