"""`/models` says how each loaded model runs: its dtype (the policy's), quant and resident MB."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cortex.engine.device import measured_policy
from cortex.neuron.engine_harness import EngineHarness, quant_bytes_per_weight

from .test_gguf_models import write_tiny_gguf


async def test_models_shows_dtype_quant_and_resident_mb_once_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORTEX_HOME", str(tmp_path / "home"))
    models = tmp_path / "models"
    models.mkdir()
    write_tiny_gguf(models / "Tiny-F32.gguf")
    harness = EngineHarness([models], device="cpu", include_default=False, kv_cache_mb=8)
    try:
        # The neuron runs what the device policy chose, not a hard-coded float32.
        assert harness.policy == measured_policy("cpu")
        assert harness.dtype == harness.policy.dtype_name
        before = harness.model("Tiny-F32").to_json()
        assert (before["dtype"], before["quant"], before["resident_mb"]) == (None, None, None)
        loaded = await harness.load("Tiny-F32")
        body = loaded.to_json()
        assert body["dtype"] == harness.policy.dtype_name
        assert body["quant"] == "none"
        assert body["resident_mb"] == pytest.approx(body["memory_mb"], abs=0.1)
        assert body["resident_mb"] > 8  # the 8 MB KV cache plus the weights
    finally:
        await asyncio.wait_for(harness.aclose(), 30)


def test_placement_sizes_a_model_as_it_will_be_held(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    write_tiny_gguf(models / "Tiny-F32.gguf")
    plain = EngineHarness([models], device="cpu", include_default=False, kv_cache_mb=8)
    int4 = EngineHarness(
        [models],
        device="cpu",
        include_default=False,
        kv_cache_mb=8,
        model_quant={"Tiny-F32": "int4-g32"},
    )
    as_stored = plain.registry.spec("Tiny-F32")
    quantized = int4.registry.spec("Tiny-F32")
    per_weight = quant_bytes_per_weight("int4-g32")
    assert per_weight == 0.5 + 4 / 32
    assert quantized.weights_mb == pytest.approx(
        as_stored.weights_mb * per_weight / plain.catalogue.dtype_bytes
    )
    # The KV budget is the same; only the weights shrink.
    assert quantized.memory_mb - quantized.weights_mb == pytest.approx(
        as_stored.memory_mb - as_stored.weights_mb
    )
    assert int4.memory_estimate_mb("Tiny-F32") == pytest.approx(quantized.memory_mb)
    assert quant_bytes_per_weight("int8") == 1.0
    assert quant_bytes_per_weight("bf16") == 2.0
    assert quant_bytes_per_weight(None) is None and quant_bytes_per_weight("none") is None
