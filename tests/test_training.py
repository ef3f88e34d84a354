import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxcheck


def loss(p, x, y):
    return jnp.mean((jnp.tanh(x @ p["W"]) @ p["v"] - y) ** 2)


def backprop(p, x, y):
    h = jnp.tanh(x @ p["W"])
    d = 2 * (h @ p["v"] - y) / y.size
    return {"W": x.T @ (jnp.outer(d, p["v"]) * (1 - h**2)), "v": h.T @ d}


def buggy_from_step_3(p, x, y):
    """W[1, 2] is off by 5% where W[0, 1] < 0.07, which training first reaches at step 3."""
    g = backprop(p, x, y)
    return {"W": jnp.where(p["W"][0, 1] < 0.07, g["W"].at[1, 2].multiply(1.05), g["W"]),
            "v": g["v"]}


def _problem():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((16, 3)), jnp.float32)
    y = jnp.sin(x[:, 0])
    return {"W": jnp.full((3, 4), 0.3), "v": jnp.linspace(-1, 1, 4)}, x, y


def _train(monitor, grad_fn, steps=8):
    params, x, y = _problem()
    opt = optax.sgd(0.5)
    state = opt.init(params)

    @jax.jit
    def train_step(params, state):
        updates, state = opt.update(grad_fn(params, x, y), state)
        return optax.apply_updates(params, updates), state

    seen = []
    for step in range(steps):
        seen.append(monitor(step, params, x, y))
        params, state = train_step(params, state)
    return seen


def test_checks_exactly_at_every_n_and_listed_steps():
    monitor = jaxcheck.GradientMonitor(loss, backprop, every=4, at=[1, 6, 99])
    seen = _train(monitor, backprop)
    assert [s for s, _ in monitor.history] == [0, 1, 4, 6]
    assert [i for i, r in enumerate(seen) if r is not None] == [0, 1, 4, 6]
    assert all(isinstance(r, jaxcheck.Report) and r.ok for _, r in monitor.history)
    assert monitor.ok and monitor.first_failure is None


def test_records_the_step_at_which_a_gradient_goes_wrong_and_where():
    monitor = jaxcheck.GradientMonitor(loss, buggy_from_step_3, every=1)
    _train(monitor, buggy_from_step_3, steps=6)
    assert [r.ok for _, r in monitor.history] == [True, True, True, False, True, False]
    step, report = monitor.first_failure
    assert step == 3
    assert [f.location for f in report.failures] == ["['W'][1, 2]"]
    assert f"step {step}: jaxcheck: FAIL" in str(monitor)


def test_raise_on_fail_stops_at_the_first_failing_check():
    monitor = jaxcheck.GradientMonitor(loss, buggy_from_step_3, every=1, raise_on_fail=True)
    with pytest.raises(AssertionError, match=r"gradient check failed at step \d+"):
        _train(monitor, buggy_from_step_3, steps=6)
    assert [s for s, _ in monitor.history] == [0, 1, 2, 3]


def test_options_are_passed_to_check():
    params, x, y = _problem()
    monitor = jaxcheck.GradientMonitor(loss, at=[0], max_failures=0)
    assert monitor(0, params, x, y).ok
    assert monitor(1, params, x, y) is None


def test_rejects_bad_schedules_options_and_traced_steps():
    with pytest.raises(ValueError, match="every, at"):
        jaxcheck.GradientMonitor(loss)
    with pytest.raises(ValueError, match="every: expected a positive int"):
        jaxcheck.GradientMonitor(loss, every=0)
    with pytest.raises(ValueError, match="at: expected an iterable"):
        jaxcheck.GradientMonitor(loss, at=[-1])
    with pytest.raises(ValueError, match="at: expected an iterable"):
        jaxcheck.GradientMonitor(loss, at=5)
    with pytest.raises(TypeError, match="unknown option 'safty'"):
        jaxcheck.GradientMonitor(loss, every=1, safty=2)
    monitor = jaxcheck.GradientMonitor(loss, every=1)
    params, x, y = _problem()
    with pytest.raises(TypeError, match="step: got a traced value"):
        jax.jit(lambda s: monitor(s, params, x, y) or 0)(0)
    with pytest.raises(TypeError, match="params: got traced values"):
        jax.jit(lambda p: monitor(0, p, x, y) or 0)(params)
