"""Device discovery: NVML GPUs when present, else one CPU device; never fails."""

from __future__ import annotations

import os

import pytest

from cortex.neuron.gpus import cpu_device, device_free_mb, discover_devices, rss_mb


def test_discovery_always_reports_a_device() -> None:
    devices = discover_devices()
    assert devices
    for device in devices:
        assert device.memory_total_mb > 0
        assert 0 <= device.memory_free_mb <= device.memory_total_mb
        assert set(device.to_json()) >= {"index", "kind", "name", "memory_free_mb", "uuid"}


def test_the_cpu_device_has_its_name_cores_and_ram() -> None:
    cpu = cpu_device()
    assert (cpu.kind, cpu.index, cpu.label) == ("cpu", 0, "cpu")
    assert cpu.name
    assert cpu.cores == os.cpu_count()
    assert cpu.memory_used_mb == pytest.approx(cpu.memory_total_mb - cpu.memory_free_mb)
    assert device_free_mb("cpu") > 0


def test_rss_of_this_process_is_known() -> None:
    assert rss_mb() > 10


@pytest.mark.gpu
def test_nvml_reports_every_gpu() -> None:
    gpus = discover_devices()
    if gpus[0].kind != "cuda":
        pytest.skip("no NVIDIA GPU")
    import torch

    assert [g.kind for g in gpus] == ["cuda"] * torch.cuda.device_count()
    for gpu in gpus:
        assert gpu.uuid and gpu.uuid.startswith("GPU-")
        assert gpu.driver_version
        assert gpu.label == f"cuda:{gpu.index}"
    assert device_free_mb("cuda:0") == pytest.approx(gpus[0].memory_free_mb, rel=0.2)
