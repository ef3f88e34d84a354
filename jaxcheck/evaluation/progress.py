"""How long a full check will take, said before it starts, and a progress bar while it runs.

Before a full check of many components, one batch of every leaf is timed (its program is
compiled then anyway, and reused by the check) and the evaluations of the first pass are
added up. An estimate over `WARN_SECONDS` raises a `CostWarning` recommending fast mode; in
an interactive terminal or notebook a check estimated to take over `SHOW_SECONDS` shows a
progress bar with an ETA on stderr. Nothing is printed when stderr is not interactive.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

import jax

from .._errors import CostWarning

# "A few minutes": beyond this a full check is worth replacing by mode="fast".
WARN_SECONDS = 180.0
SHOW_SECONDS = 5.0
# Below this many evaluations a check takes well under a second on any model worth checking
# in full; timing a batch would cost more than it tells.
MIN_EVALUATIONS = 4096
REDRAW_SECONDS = 0.25
WIDTH = 30


def interactive(stream: TextIO | None = None) -> bool:
    """True in a Jupyter/IPython kernel or when `stream` (default stderr) is a terminal."""
    shell = sys.modules.get("IPython")
    if shell is not None and getattr(shell, "get_ipython", lambda: None)() is not None:
        return True
    out = sys.stderr if stream is None else stream
    try:
        return bool(out.isatty())
    except (AttributeError, ValueError):
        return False


def format_seconds(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


@dataclasses.dataclass
class Bar:
    """A one-line text progress bar over `total` evaluations (the total may grow)."""

    total: int
    stream: TextIO
    start: float = dataclasses.field(default_factory=time.perf_counter)
    done: int = 0
    drawn: float = 0.0

    def advance(self, k: int) -> None:
        self.done += int(k)
        self.total = max(self.total, self.done)
        now = time.perf_counter()
        if now - self.drawn >= REDRAW_SECONDS:
            self.drawn = now
            self.draw(now)

    def draw(self, now: float) -> None:
        elapsed = now - self.start
        frac = self.done / self.total if self.total else 1.0
        eta = elapsed / frac - elapsed if frac > 0 else float("nan")
        filled = int(WIDTH * frac)
        eta_text = format_seconds(eta) if frac > 0 else "?"
        self.stream.write(f"\rjaxcheck [{'#' * filled}{'.' * (WIDTH - filled)}] "
                          f"{self.done}/{self.total} evaluations, {format_seconds(elapsed)} "
                          f"elapsed, ETA {eta_text}  ")
        self.stream.flush()

    def close(self) -> None:
        self.draw(time.perf_counter())
        self.stream.write("\n")
        self.stream.flush()


_ACTIVE: contextvars.ContextVar[Bar | None] = contextvars.ContextVar("jaxcheck_bar",
                                                                       default=None)


def active() -> bool:
    """Whether a progress bar is shown (the engine then reports each finished batch)."""
    return _ACTIVE.get() is not None


def advance(k: int) -> None:
    bar = _ACTIVE.get()
    if bar is not None:
        bar.advance(k)


@dataclasses.dataclass(frozen=True)
class Job:
    """The first pass over one leaf: how many evaluations, and a timer of one of them."""

    evaluations: int
    seconds_per_evaluation: Callable[[], float]


@contextlib.contextmanager
def full_check(jobs: Sequence[Job], progress: bool | None,
               stream: TextIO | None = None,
               compiling: Callable[[], float] | None = None) -> Iterator[float | None]:
    """Estimate the check's duration (yielded, or None when not estimated), warn if it is
    long, and show a progress bar while the body runs when `progress` asks for one.
    `compiling`: the seconds spent compiling the check's programs so far (shown beside the
    estimate: on a first call, compilation is often most of the time).

    `progress`: None shows a bar only in an interactive session and for a long check, True
    always shows one, False never estimates nor shows anything.
    """
    total = sum(j.evaluations for j in jobs)
    if progress is False or (progress is None and total < MIN_EVALUATIONS):
        yield None
        return
    # Every process times its batch (they run the same programs, SPMD); only process 0 of a
    # jax.distributed run warns and prints.
    seconds = sum(j.evaluations * j.seconds_per_evaluation() for j in jobs)
    if jax.process_index() != 0:
        yield seconds
        return
    if seconds > WARN_SECONDS:
        warnings.warn(
            f"this full check needs at least {total} evaluations of fn, estimated at "
            f"{format_seconds(seconds)} from timing one batch per leaf; mode='fast' checks "
            f"the gradient with a few dozen evaluations per leaf. (Silence with "
            f"warnings.simplefilter('ignore', jaxcheck.CostWarning).)", CostWarning,
            stacklevel=5)
    out = sys.stderr if stream is None else stream
    if not (progress is True or (interactive(out) and seconds > SHOW_SECONDS)):
        yield seconds
        return
    compiled = "" if compiling is None else \
        f" (after {format_seconds(compiling())} compiling its programs)"
    out.write(f"jaxcheck: full check of {total} evaluations, estimated "
              f"{format_seconds(seconds)}{compiled}\n")
    bar = Bar(total, out)
    token = _ACTIVE.set(bar)
    try:
        yield seconds
    finally:
        _ACTIVE.reset(token)
        bar.close()


