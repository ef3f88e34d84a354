"""The options of `check`, validated in one place so that every entry point agrees."""
from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, Literal

Precision = Literal["auto", "float64", "native"]
Mode = Literal["full", "fast", "sample"]
Method = Literal["central", "forward", "backward", "complex"]
MODES = ("full", "fast", "sample")
METHODS = ("central", "forward", "backward", "complex")
PRECISIONS = ("auto", "float64", "native")


@dataclasses.dataclass(frozen=True)
class Options:
    """Options of `jaxcheck.check` (and `assert_gradients`, `check_jacobian`, `check_hessian`):
    pass them as keywords, or as one `options=Options(...)` that further keywords override.

    ```python
    >>> import jax.numpy as jnp, jaxcheck
    >>> ci = jaxcheck.Options(mode="fast", seed=1)
    >>> jaxcheck.check(lambda w: jnp.sum(w ** 3), jnp.ones(5), options=ci).info["mode"]
    'fast'

    ```

    **Arguments:**

    - `eps`: relative base step of the central difference. The step of component i is
      `eps * max(1, |θᵢ|)`. Default `None`: chosen from the working dtype's machine epsilon
      (ε^(1/3), the step that balances O(h²) truncation against O(ε/h) round-off).
    - `safety`: factor applied to the estimated error (truncation + round-off) to form each
      component's tolerance. Default 3.
    - `batch_size`: perturbations evaluated per compiled `vmap` batch. Default `None`: chosen
      from a memory budget and the leaf's size.
    - `precision`: `"float64"` evaluates `fn` and `grad_fn` with floating params and args cast
      to float64 inside `jax.enable_x64(True)` (on a TPU, on the CPU device); `"native"` keeps
      the input dtypes (bfloat16/float16 upcast to float32) and sizes steps and tolerances for
      them. `"auto"` (default) is `"float64"` where the params' device runs float64 fast (the
      CPU, data-centre GPUs such as A100, H100, MI250) and `"native"` elsewhere (TPUs,
      consumer and inference GPUs); `report.info["precision"]` says which was used,
      `report.info["precision_requested"]` what was asked.
    - `max_failures`: how many failing components `str(report)` lists. Default 10.
    - `mode`: `"full"` (default: every component), `"fast"` (random directions per leaf, then
      group testing to localise) or `"sample"` (the full method on a random subset).
    - `method`: finite-difference method of full mode: `"central"` (default), `"forward"`,
      `"backward"` or `"complex"` (complex step).
    - `seed`: seed of the random directions / samples of the fast and sample modes.
    - `order`: `1` (default): `check` verifies first derivatives and always returns a
      `Report`. Second derivatives have their own entry point, `jaxcheck.check_hessian`, which
      returns a `JacobianReport`; `check(..., order=2)` raises a `ValueError` saying so, and
      `order=3` points to `jaxcheck.check_third_order` (third derivatives) the same way.
    - `argnums`: which entries of `(params, *args)` are checked, like `jax.grad`'s `argnums`
      but indexing that tuple: 0 (default) is `params`, 1 the first of `args`. A tuple checks
      several; paths then start with the entry's position (`[0]['W']`, `[1]`) and `grad_fn`
      returns a tuple of gradients.
    - `has_aux`: `fn` returns `(loss, aux)` and `grad_fn` returns `(grad, aux)`, as with
      `jax.grad(..., has_aux=True)`; aux is ignored. Default False.
    - `directions`: fast mode's number k of random (Rademacher) directions per test (the joint
      test of all leaves, then each leaf's own). A wrong leaf escapes with probability
      ≤ 2·2⁻ᵏ whatever the cancellations (2⁻ᵏ for a single leaf); default 21 (≤ 1e-6).
    - `localise`: fast mode stops group testing in a leaf after this many wrong components
      are found. Default 10.
    - `samples`: sample mode's number of random components checked per leaf. Default 20.
    - `progress`: before a long full check, an estimate and a progress bar with ETA on stderr.
      Default `None`: shown only in an interactive terminal or notebook and when the estimate
      exceeds a few seconds; `True`: always; `False`: no estimate, no bar, no `CostWarning`.
    """

    eps: float | None = None
    safety: float = 3.0
    batch_size: int | None = None
    precision: Precision = "auto"
    max_failures: int = 10
    mode: Mode = "full"
    method: Method = "central"
    seed: int = 0
    order: int = 1
    argnums: int | tuple[int, ...] = 0
    has_aux: bool = False
    directions: int = 21
    localise: int = 10
    samples: int = 20
    progress: bool | None = None
    rules: bool = False

    def __post_init__(self) -> None:
        if self.eps is not None and not (_is_real(self.eps) and 0 < self.eps < 1):
            raise ValueError(f"eps: expected a float in (0, 1) or None, got {self.eps!r}")
        if not (_is_real(self.safety) and self.safety >= 1):
            raise ValueError(f"safety: expected a float >= 1, got {self.safety!r}")
        if self.batch_size is not None and not (
            isinstance(self.batch_size, int) and not isinstance(self.batch_size, bool)
            and self.batch_size > 0
        ):
            raise ValueError(
                f"batch_size: expected a positive int or None, got {self.batch_size!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision: expected one of {PRECISIONS}, got {self.precision!r}"
            )
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {self.mode!r}")
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {self.method!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed: expected an int, got {self.seed!r}")
        if not (isinstance(self.order, int) and not isinstance(self.order, bool)
                and self.order in (1, 2, 3)):
            raise ValueError(f"order: expected 1 (gradients), 2 (second derivatives) or 3 "
                             f"(third derivatives), got {self.order!r}")

        for name in ("directions", "localise", "samples"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if not (isinstance(self.max_failures, int) and self.max_failures >= 0):
            raise ValueError(
                f"max_failures: expected a non-negative int, got {self.max_failures!r}"
            )
        if isinstance(self.argnums, list):  # jax.grad takes any sequence
            object.__setattr__(self, "argnums", tuple(self.argnums))
        if not (_is_int(self.argnums) or (isinstance(self.argnums, tuple) and self.argnums
                                          and all(map(_is_int, self.argnums)))):
            raise TypeError("argnums: expected an int or a non-empty tuple of ints (positions "
                            f"in (params, *args)), got {self.argnums!r}")
        if not isinstance(self.rules, bool):
            raise TypeError(f"rules: expected True or False, got {self.rules!r}")
        if not isinstance(self.has_aux, bool):
            raise TypeError(f"has_aux: expected True or False, got {self.has_aux!r}")
        if self.progress is not None and not isinstance(self.progress, bool):
            raise ValueError(f"progress: expected True, False or None, got {self.progress!r}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def parse_options(options: dict[str, Any]) -> Options:
    """Build `Options` from keyword arguments, naming unknown ones with a did-you-mean.

    `options=Options(...)` gives a base that the other keywords override, so one `Options`
    can configure many checks: `check(fn, params, options=ci, mode="fast")`.
    """
    options = dict(options)
    base = options.pop("options", None)
    if base is not None and not isinstance(base, Options):
        raise TypeError(f"options: expected a jaxcheck.Options or None, got "
                        f"{type(base).__name__}")
    known = [f.name for f in dataclasses.fields(Options)]
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TypeError(
                f"check() got an unknown option {name!r}.{hint} Known options: "
                + ", ".join(known + ["options"])
            )
    if base is not None:
        return dataclasses.replace(base, **options)
    return Options(**options)
