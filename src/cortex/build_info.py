"""What both servers export about themselves: `cortex_build_info` and the process's metrics."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Gauge, PlatformCollector, ProcessCollector

from cortex import __version__

__all__ = ["register_process_metrics"]


def register_process_metrics(registry: CollectorRegistry) -> None:
    """Add `cortex_build_info{version,python}` (always 1) and `process_*` (CPU seconds,
    resident memory, open files, start time; Linux) and `python_info` to `registry`."""
    info = Gauge(
        "cortex_build_info",
        "Always 1; the labels say which cortex and Python this process runs.",
        ["version", "python"],
        registry=registry,
    )
    info.labels(__version__, platform.python_version()).set(1)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
