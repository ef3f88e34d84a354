"""Gradient checks at chosen steps of a training loop (a debugging aid, never every step)."""
from __future__ import annotations

from collections import abc
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.core
import numpy as np

from ..api.check import check
from ..inputs.options import parse_options
from ..report.report import Report
from ..report.text import verdict_line


class CheckedStep(NamedTuple):
    """A `(step, report)` pair recorded by `GradientMonitor`."""

    step: int
    report: Report


class GradientMonitor:
    """Check the gradient of a training loss at chosen steps of a training loop.

    A gradient check costs about 2·n evaluations of the loss for n parameters, so it belongs at
    a few steps of a debugging run, never at every step. Call the monitor from the Python loop,
    *outside* the jitted train step, with the parameters the step is about to use: at a step
    that is not due it only compares two integers and returns `None` (no JAX work, no device
    synchronisation), so the jitted steps in between run exactly as without it. At a due step it
    runs `jaxcheck.check(fn, params, *args, grad_fn=grad_fn, **options)`, records
    `(step, report)` and returns the report.

    **Arguments:**

    - `fn`: the loss, `fn(params, *args) -> scalar` (the same function the train step
      differentiates; put the dropout key and the batch in `args`).
    - `grad_fn`: the gradient under test, `grad_fn(params, *args)`; default `jax.grad(fn)`.
    - `every`: check at steps 0, `every`, 2·`every`, ... (a positive int), and/or
    - `at`: an iterable of step numbers to check at.
    - `raise_on_fail`: raise `AssertionError` with the report at the first failing check
      (default False: record it and go on).
    - `**options`: options of `jaxcheck.check` (see `jaxcheck.Options`).

    **Example:**

    ```python
    >>> import jax, jax.numpy as jnp, optax, jaxcheck
    >>> loss = lambda w, x: jnp.mean((x @ w - 1.0) ** 2)
    >>> opt, w, x = optax.sgd(0.1), jnp.zeros(3), jnp.eye(3)
    >>> state = opt.init(w)
    >>> @jax.jit
    ... def train_step(w, state, x):
    ...     updates, state = opt.update(jax.grad(loss)(w, x), state)
    ...     return optax.apply_updates(w, updates), state
    >>> monitor = jaxcheck.GradientMonitor(loss, every=50, at=[7])
    >>> for step in range(120):
    ...     _ = monitor(step, w, x)            # a no-op except at steps 0, 7, 50, 100
    ...     w, state = train_step(w, state, x)
    >>> [(s, r.ok) for s, r in monitor.history]
    [(0, True), (7, True), (50, True), (100, True)]

    ```
    """

    def __init__(self, fn: Callable[..., Any], grad_fn: Callable[..., Any] | None = None, *,
                 every: int | None = None, at: Iterable[int] = (),
                 raise_on_fail: bool = False, **options: Any) -> None:
        if not callable(fn):
            raise TypeError(f"fn: expected a callable loss fn(params, *args), got "
                            f"{type(fn).__name__}")
        if grad_fn is not None and not callable(grad_fn):
            raise TypeError(f"grad_fn: expected a callable or None, got {type(grad_fn).__name__}")
        if every is not None and not (_is_int(every) and every > 0):
            raise ValueError(f"every: expected a positive int or None, got {every!r}")
        iterable = isinstance(at, abc.Iterable) and not isinstance(at, (str, bytes))
        steps = list(at) if iterable else None
        if steps is None or not all(_is_int(s) and s >= 0 for s in steps):
            raise ValueError(f"at: expected an iterable of non-negative ints, got {at!r}")
        if every is None and not steps:
            raise ValueError("every, at: expected a period `every` and/or steps `at` to check "
                             "at; got neither")
        parse_options(options)          # fail now, not at the first due step
        self.fn, self.grad_fn, self.every = fn, grad_fn, every
        self.at = frozenset(int(s) for s in steps)
        self.raise_on_fail, self.options = raise_on_fail, options
        self._history: list[CheckedStep] = []

    def due(self, step: int) -> bool:
        """Whether `step` is one to check at (pure Python; costs nothing)."""
        return step in self.at or (self.every is not None and step % self.every == 0)

    def __call__(self, step: Any, params: Any, *args: Any) -> Report | None:
        """Check at `step` if it is due and return the report; otherwise return `None`."""
        if isinstance(step, jax.core.Tracer):
            raise TypeError("step: got a traced value; call the monitor from the Python "
                            "training loop, outside jax.jit / lax.scan, with a Python int step")
        step = int(step)
        if not self.due(step):
            return None
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(params)):
            raise TypeError("params: got traced values; call the monitor from the Python "
                            "training loop, outside jax.jit / lax.scan, with concrete params")
        report = check(self.fn, params, *args, grad_fn=self.grad_fn, **self.options)
        self._history.append(CheckedStep(step, report))
        if self.raise_on_fail and not report.ok:
            raise AssertionError(f"gradient check failed at step {step}:\n{report}")
        return report

    @property
    def history(self) -> tuple[CheckedStep, ...]:
        """The `(step, report)` pairs recorded so far, in call order."""
        return tuple(self._history)

    @property
    def ok(self) -> bool:
        """True when every recorded check passed (also when none has run yet)."""
        return all(r.ok for _, r in self._history)

    @property
    def first_failure(self) -> CheckedStep | None:
        """The first recorded `(step, report)` whose report failed, or `None`."""
        return next((c for c in self._history if not c.report.ok), None)

    def __str__(self) -> str:
        if not self._history:
            return "GradientMonitor: no check has run yet"
        width = max(len(str(s)) for s, _ in self._history)
        return "\n".join(f"step {str(s).rjust(width)}: {verdict_line(r)}"
                         for s, r in self._history)


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)
