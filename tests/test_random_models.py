"""Verdicts on randomised models (`random_models.draw`): no false alarm, planted errors found.

Each draw is checked twice per mode: with its correct gradient (`jax.grad`), which must give
no FAIL, and with one entry of the gradient off by a relative 1e-3 (an entry whose gradient
is above its leaf's median), which must be found as the mode promises:

- full mode: whenever the error exceeds the tolerance reported for that component (unless the
  component sits on a kink, INCONCLUSIVE, where a subgradient range is valid);
- fast mode: whenever the error's share of a direction's derivative, |uⱼ|·|eⱼ|, exceeds the
  tolerance of every direction of the leaf's own test (`fast`'s bound); then the leaf FAILs
  and the exact entry is localised.

The default run checks `DEFAULT_DRAWS` draws per mode; `-m slow` checks `SLOW_DRAWS`.
Each test prints the detection rate and the sensitivity `tolerance / |gᵢ|` of the planted
entries (median and worst).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from random_models import Model, draw, planted_entry

import jaxcheck

# The default run's draws: the first 14, and the first with a ReLU (26) and with a Huber head
# (22), so that it reaches every activation and head; its cost is most of the default run's.
DEFAULT_DRAWS = (*range(14), 22, 26)
SLOW_DRAWS = range(240)
PLANTED_ERROR = 1e-3
# Fast mode promises to catch a wrong entry whose error, scaled as in u, exceeds about twice
# a direction's tolerance (`numerics/fast.py`: room for the numerical derivative's own error);
# at 1-2x it is a coin flip by design (seed 190 of the slow draws: 1.02x the joint test's
# tolerance, 0.81x that of the leaf's own test, which decided it).
FAST_MARGIN = 2.0


@dataclasses.dataclass
class Outcome:
    model: Model
    correct_ok: bool
    correct_text: str
    planted_found: bool          # the planted entry is reported as FAIL
    promised: bool               # the mode's bound promises it is found
    kink: bool                   # the planted entry is INCONCLUSIVE (full mode)
    sensitivity: float | None  # reported tolerance / |gᵢ| of the planted entry (full mode)


def _leaf(report, name):
    return next(leaf for leaf in report.leaves if leaf.path == f"['{name}']")


def _float64(x):
    return jnp.asarray(x, jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x


def working_gradient(model: Model) -> dict[str, np.ndarray]:
    """The gradient as the check sees it: on float64 copies of the floating params and args,
    inside `jax.enable_x64(True)` (dropout masks depend on that setting)."""
    with jax.enable_x64(True):
        params = {k: _float64(v) for k, v in model.params.items()}
        args = [_float64(a) if isinstance(a, jax.Array) and not jax.dtypes.issubdtype(
            a.dtype, jax.dtypes.prng_key) else a for a in model.args]
        return {k: np.asarray(g) for k, g in jax.grad(model.loss)(params, *args).items()}


def run_draw(seed: int, mode: str) -> Outcome:
    model = draw(seed)
    grads = working_gradient(model)
    with jax.enable_x64(model.dtype == "float64"):
        name, index = planted_entry(model, grads, np.random.default_rng(seed))

        def planted(p, *args):
            g = jax.grad(model.loss)(p, *args)
            flat = g[name].reshape(-1).at[index].multiply(1.0 + PLANTED_ERROR)
            return {**g, name: flat.reshape(g[name].shape)}

        correct = jaxcheck.check(model.loss, model.params, *model.args, mode=mode)
        report = jaxcheck.check(model.loss, model.params, *model.args, grad_fn=planted,
                                mode=mode)
    leaf = _leaf(report, name)
    found = any(f.path == leaf.path and np.ravel_multi_index(f.index, leaf.shape) == index
                for f in report.failures) if leaf.shape else False
    if mode == "full":
        analytic, tolerance = float(leaf.analytic[index]), float(leaf.tolerance[index])
        error = abs(analytic) * PLANTED_ERROR / (1.0 + PLANTED_ERROR)
        kink = int(leaf.status[index]) == 1
        return Outcome(model, correct.ok, str(correct), found, error > tolerance and not kink,
                       kink, tolerance / (abs(analytic) / (1.0 + PLANTED_ERROR)))
    # fast mode: the share of the planted error in the leaf's whole-leaf directions
    checks = leaf.directions
    theta = np.asarray(model.params[name], np.float64).reshape(-1)
    u_j = _direction_magnitude(float(theta[index]), theta.size)
    g_planted = abs(grads[name].reshape(-1)[index]) * (1.0 + PLANTED_ERROR)
    share = u_j * g_planted * PLANTED_ERROR / (1.0 + PLANTED_ERROR)
    # the tests that may decide the leaf: the joint test where it came first (a wrong entry
    # adds to its directions as to the leaf's own, the same uⱼ), and the leaf's own test over
    # the whole leaf (where the joint test failed and the leaf's probe showed nothing)
    tolerances = []
    if checks is not None:
        whole = (checks.hi - checks.lo) == leaf.size
        tolerances += list(checks.tolerance[whole])
    joint = report.info.get("joint")
    if joint is not None:
        tolerances += list(joint["tolerance"])
    promised = bool(tolerances) and share > FAST_MARGIN * max(tolerances)
    return Outcome(model, correct.ok, str(correct), found, promised, False, None)


def _direction_magnitude(theta_j: float, m: int) -> float:
    """|uⱼ| of a direction over a whole leaf of m entries, as fast mode documents it: the power
    of two in [max(1, |θⱼ|), 2·max(1, |θⱼ|)) over the power of two in [√m, 2√m)."""
    s = 2.0 ** np.ceil(np.log2(max(1.0, abs(theta_j))))
    return float(s / 2.0 ** np.ceil(np.log2(np.sqrt(m))))


def _summarise(outcomes: list[Outcome], mode: str) -> str:
    n = len(outcomes)
    found = sum(o.planted_found for o in outcomes)
    promised = [o for o in outcomes if o.promised]
    lines = [f"{mode} mode over {n} draws: false alarms {sum(not o.correct_ok for o in outcomes)}"
             f"/{n}; planted 1e-3 errors found {found}/{n} ({found / n:.0%}); promised by "
             f"the bound {len(promised)}, of which found {sum(o.planted_found for o in promised)}"]
    sens = np.array([o.sensitivity for o in outcomes if o.sensitivity is not None])
    if sens.size:
        kinks = sum(o.kink for o in outcomes)
        lines.append(f"  tolerance/|g_i| of the planted entry: median {np.median(sens):.1e}, "
                     f"worst {sens.max():.1e}; at a kink (INCONCLUSIVE): {kinks}")
    return "\n".join(lines)


def _check_draws(seeds, mode: str, capsys) -> list[Outcome]:
    outcomes = []
    for seed in seeds:
        outcomes.append(run_draw(seed, mode))
        # every draw is a new fn: its compiled programs are never needed again, and hundreds
        # of them held at once exhaust memory
        jax.clear_caches()
    with capsys.disabled():
        print("\n" + _summarise(outcomes, mode))
    alarms = [o.model.describe() + "\n" + o.correct_text for o in outcomes if not o.correct_ok]
    assert not alarms, "false alarms on correct gradients:\n" + "\n\n".join(alarms)
    missed = [o.model.describe() for o in outcomes if o.promised and not o.planted_found]
    assert not missed, "planted errors above the promised threshold missed:\n" + "\n".join(missed)
    return outcomes


def _sensitivity_targets(outcomes: list[Outcome]) -> None:
    sens = np.array([o.sensitivity for o in outcomes])
    assert np.median(sens) <= 1e-6
    assert sens.max() <= 1e-3, [o.model.describe() for o in outcomes if o.sensitivity > 1e-3]


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_random_models_default_draws(mode, capsys):
    outcomes = _check_draws(DEFAULT_DRAWS, mode, capsys)
    if mode == "full":
        _sensitivity_targets(outcomes)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "fast"])
def test_random_models_many_draws(mode, capsys):
    outcomes = _check_draws(SLOW_DRAWS, mode, capsys)
    if mode == "full":
        _sensitivity_targets(outcomes)


def test_default_draws_reach_every_activation_and_head():
    models = [draw(seed, arrays=False) for seed in DEFAULT_DRAWS]
    slow = [draw(seed, arrays=False) for seed in SLOW_DRAWS]
    assert {m.activation for m in models} == {m.activation for m in slow}
    assert {m.head for m in models} == {m.head for m in slow}
    assert {m.dtype for m in models} == {"float32", "float64"}


def test_draws_cover_the_space():
    """The generator reaches every activation, head, dtype and option within the slow draws."""
    models = [draw(seed, arrays=False) for seed in SLOW_DRAWS]
    assert {m.activation for m in models} == {"tanh", "relu", "gelu", "sigmoid", "softplus",
                                              "silu", "elu"}
    assert {m.head for m in models} == {"sum", "mean", "squared_mean", "mse",
                                        "cross_entropy", "huber", "logsumexp", "l1"}
    assert {m.dtype for m in models} == {"float32", "float64"}
    assert {m.depth for m in models} == {1, 2, 3}
    for option in ("layer_norm", "residual"):
        assert {getattr(m, option) for m in models} == {True, False}
    assert {m.dropout > 0 for m in models} == {True, False} == {m.l2 > 0 for m in models}
    widths = [w for m in models for w in m.widths]
    assert min(widths) <= 10 and max(widths) >= 200
    scales = [m.input_scale for m in models] + [m.param_scale for m in models]
    assert min(scales) < 0.03 and max(scales) > 10
