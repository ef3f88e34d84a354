"""jaxcheck's XLA options (`_compiler`): which programs take which, and that they compute the
same numbers as XLA's defaults."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcheck import _compiler
from jaxcheck.evaluation import engine, product_outputs
from jaxcheck.numerics import joint
from jaxcheck.plan import gradients

needs_options = pytest.mark.skipif(not _compiler._cpu_options_supported(),
                                   reason="this XLA lacks jaxcheck's CPU options")


@needs_options
def test_options_by_platform_size_and_how_often_a_program_runs():
    small, large = 1024, _compiler.SMALL_PROGRAM_BYTES + 1
    per_batch = _compiler.options("cpu", small)
    once = _compiler.options("cpu", small, once=True)
    assert per_batch == _compiler.CPU_OPTIONS
    assert once is not None and once["xla_backend_optimization_level"] == 0
    assert per_batch is not None and per_batch["xla_backend_optimization_level"] == 1
    # one program's code is generated on one thread: the engine compiles programs side by side
    assert once["xla_cpu_parallel_codegen_split_count"] == 1
    assert _compiler.options("cpu", large) is None
    assert _compiler.options("cpu", large, once=True) is None
    assert _compiler.options("gpu", small, once=True) is None


def test_programs_run_once_per_check_are_marked_and_batch_programs_are_not():
    for fn in (gradients._gradient, product_outputs.outputs, product_outputs.transposed):
        assert _compiler.is_run_once(fn), fn.__name__
    for fn in (joint._losses_at, joint._evaluate_rows):
        assert not _compiler.is_run_once(fn), fn.__name__


@_compiler.runs_once
def _once(x):
    return jnp.tanh(x) @ x.T + jnp.exp(-x).sum()


def _per_batch(x):
    return jnp.tanh(x) @ x.T + jnp.exp(-x).sum()


@needs_options
def test_engine_compiles_a_run_once_program_with_its_options(monkeypatch):
    seen = []
    original = _compiler.compile_lowered

    def recording(lowered, platform, once=False):
        seen.append(once)
        return original(lowered, platform, once)
    monkeypatch.setattr(_compiler, "compile_lowered", recording)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 5)), jnp.float32)
    got_once = engine.call(_once, (), x)
    got_batch = engine.call(_per_batch, (), x)
    assert seen == [True, False]
    expected = jax.jit(_per_batch)(x)
    np.testing.assert_allclose(np.asarray(got_once), np.asarray(expected), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(got_batch), np.asarray(expected), rtol=1e-6)


@needs_options
def test_jitted_takes_the_once_options_of_a_marked_function():
    x = jnp.ones((3, 3), jnp.float32)
    once, per_batch = _compiler.jit(_once), _compiler.jit(_per_batch)
    np.testing.assert_allclose(np.asarray(once(x)), np.asarray(per_batch(x)), rtol=1e-6)
    assert list(once._by_options) == [tuple(sorted(_compiler.ONCE_CPU_OPTIONS.items()))]
    assert list(per_batch._by_options) == [tuple(sorted(_compiler.CPU_OPTIONS.items()))]
