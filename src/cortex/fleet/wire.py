"""The neuron's wire answers (`GET /status`, `GET /models`) read into snapshot types.

Tolerant by design: a field a neuron leaves out is unknown (None), never an error, so nodes of
another version still join the fleet.
"""

from __future__ import annotations

from typing import Any

from cortex.fleet.state import DeviceInfo, ModelOnNode, NodeSnapshot

__all__ = ["parse_neuron"]

_MODEL_STATES = {"available", "loading", "loaded", "unloading", "failed"}


def parse_neuron(name: str, endpoint: str, status: Any, listing: Any) -> NodeSnapshot:
    """A neuron's `/status` and `/models` answers as a `NodeSnapshot`."""
    status = status if isinstance(status, dict) else {}
    entries: Any = listing
    if isinstance(listing, dict):
        entries = listing.get("models", listing.get("data"))
    if not isinstance(entries, list):
        entries = []
    models: dict[str, ModelOnNode] = {}
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            models[entry["id"]] = _parse_model(entry)
    devices = tuple(
        _parse_device(i, d)
        for i, d in enumerate(status.get("devices") or [])
        if isinstance(d, dict)
    )
    used = sum(
        m.memory_mb or 0.0 for m in models.values() if m.state in ("loaded", "loading", "unloading")
    )
    memory = status.get("memory") if isinstance(status.get("memory"), dict) else status
    capacity = _number(memory, "capacity_mb", "memory_mb", "limit_mb", "total_mb")
    if capacity is None:
        totals = [d.memory_total_mb for d in devices if d.memory_total_mb is not None]
        capacity = sum(totals) if totals else None
    free = _number(memory, "free_mb", "memory_free_mb", "available_mb")
    if free is None and capacity is not None:
        free = max(0.0, capacity - used)
    requests = status.get("requests") if isinstance(status.get("requests"), dict) else status
    return NodeSnapshot(
        name=name,
        kind="neuron",
        endpoint=endpoint,
        models=models,
        devices=devices,
        memory_capacity_mb=capacity,
        memory_free_mb=free,
        in_flight=int(_number(requests, "running") or 0),
        waiting=int(_number(requests, "waiting") or 0),
        load_cycles=int(_number(status, "load_cycles", "cycles") or 0),
        version=status.get("version") if isinstance(status.get("version"), str) else None,
        pulls=_pulls(status.get("pulls")),
    )


def _number(data: Any, *keys: str) -> float | None:
    if not isinstance(data, dict):
        return None
    for key in keys:
        value = data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def _parse_model(entry: dict[str, Any]) -> ModelOnNode:
    state = entry.get("state")
    generation = entry.get("generation_config")
    context = entry.get("context_length")
    return ModelOnNode(
        id=entry["id"],
        state=state if state in _MODEL_STATES else "available",
        memory_mb=_number(entry, "memory_mb"),
        context_length=int(context) if isinstance(context, int | float) else None,
        architecture=entry.get("architecture"),
        device=str(entry["device"]) if entry.get("device") is not None else None,
        pinned=bool(entry.get("pinned", False)),
        in_flight=int(_number(entry, "in_flight") or 0),
        last_used_at=_number(entry, "last_used_at"),
        error=entry.get("error"),
        generation_config=dict(generation) if isinstance(generation, dict) else {},
        progress=_progress(entry.get("progress")),
        kind="embedding" if entry.get("kind") == "embedding" else "chat",
        dtype=_text(entry.get("dtype")),
        quant=_text(entry.get("quant")),
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _progress(value: Any) -> dict[str, Any] | None:
    """A load's progress: the neuron's `{phase, fraction, bytes, total_bytes}`, or an older
    neuron's bare fraction."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"phase": "loading", "fraction": float(value)}
    if not isinstance(value, dict):
        return None
    phase = value.get("phase")
    out: dict[str, Any] = {
        "phase": phase if isinstance(phase, str) else "loading",
        "fraction": _number(value, "fraction"),
    }
    for key in ("bytes", "total_bytes"):
        number = _number(value, key)
        if number is not None:
            out[key] = int(number)
    return out


def _pulls(value: Any) -> tuple[dict[str, Any], ...]:
    """The pulls a neuron runs on their own: each its `source` and its progress."""
    pulls = []
    for entry in value if isinstance(value, list) else ():
        if not isinstance(entry, dict) or not isinstance(entry.get("source"), str):
            continue
        progress = _progress(entry)
        assert progress is not None  # a dict always reads as a progress
        file = entry.get("file")
        pulls.append(
            {
                "source": entry["source"],
                **progress,
                **({"file": file} if isinstance(file, str) else {}),
            }
        )
    return tuple(pulls)


def _parse_device(index: int, entry: dict[str, Any]) -> DeviceInfo:
    return DeviceInfo(
        index=int(_number(entry, "index") or index),
        kind=str(entry.get("kind", "cpu")),
        name=str(entry.get("name", "")),
        memory_total_mb=_number(entry, "memory_total_mb", "total_mb"),
        memory_used_mb=_number(entry, "memory_used_mb", "used_mb"),
        memory_free_mb=_number(entry, "memory_free_mb", "free_mb"),
        utilization=_number(entry, "utilization"),
    )
