"""`inputs.precision.resolve_precision`: what `precision="auto"` means on each device."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcheck.inputs.precision import (
    FAST_FLOAT64_GPUS,
    choose_precision,
    device_of,
    resolve_precision,
)


@pytest.mark.parametrize("platform, kind", [
    ("gpu", "NVIDIA H100 80GB HBM3"),
    ("gpu", "NVIDIA H100 PCIe"),
    ("gpu", "NVIDIA A100-SXM4-40GB"),
    ("gpu", "NVIDIA A100 80GB PCIe"),
    ("gpu", "Tesla V100-SXM2-16GB"),
    ("gpu", "Tesla V100S-PCIE-32GB"),
    ("gpu", "Tesla P100-PCIE-16GB"),
    ("gpu", "NVIDIA H200"),
    ("gpu", "NVIDIA GH200 480GB"),
    ("gpu", "NVIDIA B200"),
    ("gpu", "NVIDIA A30"),
    ("cuda", "NVIDIA H800"),
    ("rocm", "AMD Instinct MI250X"),
    ("gpu", "AMD Instinct MI300X"),
    ("gpu", "AMD Instinct MI100"),
    ("gpu", "gfx90a"),
])
def test_auto_is_float64_on_data_centre_gpus(platform, kind):
    assert resolve_precision("auto", platform, kind) == "float64"


@pytest.mark.parametrize("kind", [
    "NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 3080", "Tesla T4", "NVIDIA L4",
    "NVIDIA L40S", "NVIDIA A10", "NVIDIA A10G", "NVIDIA A40", "NVIDIA RTX A6000",
    "NVIDIA H20", "NVIDIA B300", "AMD Radeon RX 7900 XTX", "",
])
def test_auto_is_native_on_consumer_and_inference_gpus(kind):
    assert resolve_precision("auto", "gpu", kind) == "native"


def test_auto_is_float64_on_cpu():
    assert resolve_precision("auto", "cpu", "cpu") == "float64"


@pytest.mark.parametrize("kind", ["TPU v4", "TPU v5 lite", "TPU v5p"])
def test_auto_is_native_on_tpu(kind):
    assert resolve_precision("auto", "tpu", kind) == "native"


def test_an_unknown_backend_gets_native():
    assert resolve_precision("auto", "METAL", "Apple M2") == "native"


def test_a_gpu_name_on_another_platform_is_not_a_gpu():
    assert resolve_precision("auto", "tpu", "NVIDIA H100") == "native"


@pytest.mark.parametrize("platform, kind", [("cpu", "cpu"), ("tpu", "TPU v4"),
                                            ("gpu", "NVIDIA H100"), ("gpu", "Tesla T4")])
@pytest.mark.parametrize("explicit", ["float64", "native"])
def test_explicit_precision_stands_for_itself(platform, kind, explicit):
    assert resolve_precision(explicit, platform, kind) == explicit


def test_table_names_every_data_centre_part_of_the_brief():
    for kind in ("P100", "V100", "A100", "A30", "A800", "H100", "H800", "H200", "GH200",
                 "B100", "B200", "GB200", "MI100", "MI200", "MI210", "MI250", "MI300"):
        assert kind in FAST_FLOAT64_GPUS


def test_device_is_the_first_jax_array_leafs():
    cpu = jax.devices("cpu")[0]
    x = jax.device_put(jnp.ones(2), cpu)
    assert device_of({"a": np.ones(2), "b": x}) == cpu


def test_device_without_jax_arrays_is_the_default_one():
    assert device_of({"a": np.ones(2), "b": 1.0}) == jax.devices()[0]


def test_choice_records_what_was_asked_and_what_is_used():
    choice = choose_precision("auto", [jnp.ones(2)])
    assert choice.requested == "auto"
    assert choice.used == resolve_precision("auto", jax.devices()[0].platform,
                                            jax.devices()[0].device_kind)
    assert choice.info() == {"precision": choice.used, "precision_requested": "auto"}
