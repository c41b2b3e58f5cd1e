"""`/models` reports each model's architecture, parameters and active parameters (MoE); a
Qwen3-MoE GGUF is imported, loaded and served by the real engine harness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from cortex.engine.models import LlamaConfig
from cortex.neuron import GenerateRequest, SamplingOptions
from cortex.neuron.app import create_neuron_app
from cortex.neuron.engine_harness import EngineHarness

from ..engine.test_gguf_synthetic import _vocab
from ..engine.test_qwen3_gguf import write_qwen3_gguf
from ..engine.test_qwen3_tiny import CONFIGS, make_checkpoint

pytest.importorskip("transformers")


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A models folder with a Qwen3 and a Qwen3-MoE checkpoint and a Qwen3-MoE GGUF."""
    monkeypatch.setenv("CORTEX_HOME", str(tmp_path / "home"))
    root = tmp_path / "models"
    root.mkdir()
    made: dict[str, Any] = {}
    for name in ("qwen3", "qwen3_moe-step2"):
        folder = root / name
        folder.mkdir()
        made[name] = make_checkpoint(CONFIGS[name], folder)
    raw = {**CONFIGS["qwen3_moe"], "vocab_size": len(_vocab()), "mlp_only_layers": []}
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    made["moe-gguf"] = make_checkpoint(raw, scratch)
    write_qwen3_gguf(root / "moe-gguf.gguf", raw, made["moe-gguf"])
    made["root"] = root
    made["moe-gguf-config"] = LlamaConfig.from_dict(raw)
    return made


async def test_models_report_parameters_and_serve_a_moe_gguf(models: dict[str, Any]) -> None:
    harness = EngineHarness([models["root"]], device="cpu", include_default=False, kv_cache_mb=4)
    app = create_neuron_app(harness)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://neuron") as client:
        body = (await client.get("/models")).json()
    entries = {entry["id"]: entry for entry in body["data"]}
    dense = entries["qwen3"]
    total = sum(p.numel() for p in models["qwen3"].parameters())
    assert dense["architecture"] == "Qwen3ForCausalLM"
    assert dense["parameters"] == dense["active_parameters"] == total

    sparse = entries["qwen3_moe-step2"]
    config = LlamaConfig.from_dict(CONFIGS["qwen3_moe-step2"])
    assert sparse["architecture"] == "Qwen3MoeForCausalLM"
    assert sparse["parameters"] == sum(p.numel() for p in models["qwen3_moe-step2"].parameters())
    assert sparse["active_parameters"] == config.active_parameters < sparse["parameters"]

    gguf = entries["moe-gguf"]
    assert gguf["architecture"] == "Qwen3MoeForCausalLM"
    assert gguf["parameters"] == models["moe-gguf-config"].parameters
    assert gguf["active_parameters"] == models["moe-gguf-config"].active_parameters

    assert (await harness.load("moe-gguf")).state == "loaded"
    request = GenerateRequest(
        model="moe-gguf",
        prompt="the answer",
        sampling=SamplingOptions(max_tokens=6, temperature=0, ignore_eos=True),
    )
    async with harness.generate(request) as stream:
        events = [event async for event in stream]
    assert events[-1].usage is not None and events[-1].usage.completion_tokens == 6
    await harness.aclose()
