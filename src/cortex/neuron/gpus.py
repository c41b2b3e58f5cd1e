"""Device discovery: NVIDIA GPUs through NVML, else the host's CPU and RAM (never fails)."""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["Device", "cpu_device", "device_free_mb", "discover_devices", "rss_mb"]

_MB = 1024 * 1024


@dataclass(frozen=True)
class Device:
    """One device of the node: a CUDA GPU or the host CPU.

    Args:
        index: the CUDA index (0 for the CPU).
        kind: `cuda` or `cpu`.
        memory_total_mb: device memory (RAM for the CPU).
        memory_free_mb: free device memory (available RAM for the CPU).
        utilization: GPU busy fraction 0..1 over the last sample, None when unknown.
        cores: CPU cores (None for GPUs).
    """

    index: int
    kind: Literal["cuda", "cpu"]
    name: str
    memory_total_mb: float
    memory_used_mb: float
    memory_free_mb: float
    uuid: str | None = None
    utilization: float | None = None
    driver_version: str | None = None
    cores: int | None = None

    @property
    def label(self) -> str:
        """`cuda:N` or `cpu`, as torch names it."""
        return f"cuda:{self.index}" if self.kind == "cuda" else "cpu"

    def to_json(self) -> dict[str, Any]:
        """The wire form used by `/status`."""
        return {
            "index": self.index,
            "kind": self.kind,
            "name": self.name,
            "uuid": self.uuid,
            "memory_total_mb": round(self.memory_total_mb, 1),
            "memory_used_mb": round(self.memory_used_mb, 1),
            "memory_free_mb": round(self.memory_free_mb, 1),
            "utilization": self.utilization,
            "driver_version": self.driver_version,
            "cores": self.cores,
        }


def discover_devices() -> list[Device]:
    """The node's NVIDIA GPUs, or one CPU device when there are none (or NVML is missing)."""
    gpus = _nvml_devices()
    return gpus if gpus else [cpu_device()]


def _nvml_devices() -> list[Device]:
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, DriverNotLoaded, ... : no GPUs here
        return []
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                utilization: float | None = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100
            except Exception:  # not supported on some boards and MIG slices
                utilization = None
            devices.append(
                Device(
                    index=index,
                    kind="cuda",
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    memory_total_mb=memory.total / _MB,
                    memory_used_mb=memory.used / _MB,
                    memory_free_mb=memory.free / _MB,
                    utilization=utilization,
                    driver_version=driver,
                )
            )
        return devices
    except Exception:
        return []
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def cpu_device() -> Device:
    """The host as a device: CPU model name, cores, RAM total and available."""
    meminfo = _meminfo_mb()
    total = meminfo.get("MemTotal", 0.0)
    free = meminfo.get("MemAvailable", meminfo.get("MemFree", 0.0))
    return Device(
        index=0,
        kind="cpu",
        name=_cpu_name(),
        memory_total_mb=total,
        memory_used_mb=max(0.0, total - free),
        memory_free_mb=free,
        cores=os.cpu_count(),
    )


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _meminfo_mb() -> dict[str, float]:
    values: dict[str, float] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            number = rest.split()
            if number and number[0].isdigit():
                values[key] = int(number[0]) / 1024  # kB
    except OSError:
        pass
    if "MemTotal" not in values:
        try:
            pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
            values["MemTotal"] = values["MemAvailable"] = pages * size / _MB
        except (ValueError, OSError, AttributeError):
            pass
    return values


def device_free_mb(device: str) -> float:
    """Free memory of a device named like torch (`cpu`, `cuda`, `cuda:N`), in MB."""
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        for gpu in _nvml_devices():
            if gpu.index == index:
                return gpu.memory_free_mb
        return 0.0
    return cpu_device().memory_free_mb


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process (this one by default), in MB; 0 when unknown."""
    path = Path(f"/proc/{pid or os.getpid()}/status")
    try:
        for line in path.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0
