"""The neuron: one node's devices, model registry and lifecycle, and its OpenAI-serving app.

`create_neuron_app(harness)` is the Starlette app of the wire API; `EngineHarness`
(`cortex.neuron.engine_harness`) serves through the cortex engine, `cortex.testing.FakeHarness`
pretends for tests. Nothing here imports torch until the engine harness loads a model.
"""

from __future__ import annotations

from cortex.neuron.app import create_neuron_app
from cortex.neuron.gpus import Device, discover_devices
from cortex.neuron.harness import GenerationStream, Harness, RegistryHarness
from cortex.neuron.registry import ModelLease, ModelRegistry
from cortex.neuron.types import (
    GenerateRequest,
    GenerationEvent,
    HarnessStats,
    LoadedModel,
    LoadEvent,
    ModelEntry,
    ModelSpec,
    SamplingOptions,
    TokenUsage,
    ToolCall,
)

__all__ = [
    "Device",
    "GenerateRequest",
    "GenerationEvent",
    "GenerationStream",
    "Harness",
    "HarnessStats",
    "LoadEvent",
    "LoadedModel",
    "ModelEntry",
    "ModelLease",
    "ModelRegistry",
    "ModelSpec",
    "RegistryHarness",
    "SamplingOptions",
    "TokenUsage",
    "ToolCall",
    "create_neuron_app",
    "discover_devices",
]
