"""`engine.call`: whole-batch programs compiled once per shapes, dtypes and shardings, and
compiled ahead of their inputs (`compile_call_ahead`): fast mode's joint test beside the
gradient."""
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sharded_models import run_on_devices

import jaxcheck
from jaxcheck.evaluation import engine
from jaxcheck.plan import gradients


def _scaled(k, x, y):
    return k * jnp.sum(x * y)


def test_a_program_compiled_ahead_is_the_one_called():
    engine.clear_cache()
    before = engine.compilations()
    spec = jax.ShapeDtypeStruct((3,), jnp.float32)
    engine.compile_call_ahead(_scaled, (2.0,), spec, spec)
    engine.compile_call_ahead(_scaled, (2.0,), spec, spec)   # already under way: nothing
    out = engine.call(_scaled, (2.0,), jnp.ones(3), np.arange(3, dtype=np.float32))
    assert float(out) == 6.0
    assert engine.compilations() - before == 1


def test_other_shapes_dtypes_or_statics_compile_their_own_program():
    engine.clear_cache()
    before = engine.compilations()
    engine.call(_scaled, (2.0,), jnp.ones(3), jnp.ones(3))
    engine.call(_scaled, (2.0,), jnp.ones(3), jnp.ones(3))
    assert engine.compilations() - before == 1
    engine.call(_scaled, (2.0,), jnp.ones(4), jnp.ones(4))
    engine.call(_scaled, (3.0,), jnp.ones(4), jnp.ones(4))
    with jax.enable_x64(True):
        out = engine.call(_scaled, (3.0,), jnp.ones(4, jnp.float64), jnp.ones(4))
    assert out.dtype == jnp.float64
    assert engine.compilations() - before == 4


COMMITTED_SCRIPT = r"""
import json
import jax, jax.numpy as jnp
from jaxcheck.evaluation import engine

def scaled(k, x, y):
    return k * jnp.sum(x * y)

devices = jax.devices()
engine.call(scaled, (2.0,), jnp.ones(3), jnp.ones(3))       # a program for device 0
x = jax.device_put(jnp.ones(3), devices[1])
out = engine.call(scaled, (2.0,), x, x)
print(json.dumps({"on": sorted(str(d) for d in out.devices()), "wanted": str(devices[1]),
                  "value": float(out)}))
"""


def test_an_array_committed_to_another_device_gets_a_program_for_it():
    # two forced CPU devices, in a process of its own (XLA_FLAGS before JAX is imported)
    out = run_on_devices(COMMITTED_SCRIPT, devices=2)
    assert out["on"] == [out["wanted"]]
    assert out["value"] == 6.0


def _fails(x):
    raise ValueError("the kernel's own error")


def test_a_failed_compilation_ahead_raises_where_the_program_is_called():
    engine.clear_cache()
    engine.compile_call_ahead(_fails, (), jax.ShapeDtypeStruct((2,), jnp.float32))
    with pytest.raises(ValueError, match="the kernel's own error"):
        engine.call(_fails, (), jnp.ones(2))


def _mlp(seed=0):
    rng = np.random.default_rng(seed)
    params = {"w1": jnp.asarray(rng.normal(size=(6, 9)), jnp.float32),
              "b1": jnp.asarray(0.1 * rng.normal(size=9), jnp.float32),
              "w2": jnp.asarray(rng.normal(size=(9, 2)), jnp.float32)}
    return params, jnp.asarray(rng.normal(size=(5, 6)), jnp.float32)


def _loss(p, x):
    return jnp.sum(jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]) ** 2


def _started_when_the_gradient_is_asked(monkeypatch) -> list:
    """`engine.compilations_started()` at each request of the gradient, from now on."""
    engine.clear_cache()
    seen = []
    original = gradients.AnalyticGradient.device_leaves

    def recording(self, *args, **kwargs):
        seen.append(engine.compilations_started())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(gradients.AnalyticGradient, "device_leaves", recording)
    return seen


def test_fast_mode_starts_the_joint_program_before_the_gradient(monkeypatch):
    params, x = _mlp()
    seen = _started_when_the_gradient_is_asked(monkeypatch)
    before, started = engine.compilations(), engine.compilations_started()
    report = jaxcheck.check(_loss, params, x, mode="fast")
    assert report.ok and report.info["joint"]["passed"]
    # the joint program was under way when the gradient was asked for, and it is the one the
    # check ran: the only program compiled
    assert seen and seen[0] - started == 1
    assert engine.compilations() - before == 1


def test_full_mode_computes_the_gradient_beside_the_leaf_programs(monkeypatch):
    params, x = _mlp(seed=1)
    threads = []
    original = gradients.AnalyticGradient.device_leaves

    def recording(self, *args, **kwargs):
        threads.append(threading.current_thread())
        return original(self, *args, **kwargs)

    engine.clear_cache()
    monkeypatch.setattr(gradients.AnalyticGradient, "device_leaves", recording)
    before, started = engine.compilations(), engine.compilations_started()
    report = jaxcheck.check(_loss, params, x, mode="full")
    assert report.ok
    # the gradient at params was asked for once, in a background thread (it compiles while the
    # main thread starts the leaves' programs: which of them starts first is up to the threads),
    # and nothing was compiled twice: every program started is one compiled
    assert len(threads) == 1 and threads[0] is not threading.main_thread()
    assert engine.compilations_started() - started >= 1   # the leaves' program
    assert engine.compilations() - before == engine.compilations_started() - started
