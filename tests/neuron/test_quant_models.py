"""neuron.toml's `quant`: a node-wide default and `[models.ID] quant`, a GGUF imported quantized."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cortex.config import NeuronConfig
from cortex.config.loading import load_config
from cortex.engine.safetensors import load_file
from cortex.errors import ConfigError
from cortex.neuron import GenerateRequest, SamplingOptions
from cortex.neuron.engine_harness import EngineHarness

from .test_gguf_models import write_tiny_gguf


def test_per_model_quant_overrides_the_nodes() -> None:
    config = NeuronConfig.model_validate(
        {"quant": "int8", "models": {"big": {"quant": "int4-g32"}, "plain": {}}}
    )
    harness = EngineHarness.from_config(config)
    assert harness.quant_of("big") == "int4-g32"
    assert harness.quant_of("plain") == "int8"  # no quant of its own: the node's
    assert harness.quant_of("other") == "int8"
    # A load may ask (a models.toml profile's `quant`): it beats the node-wide default only.
    assert harness.quant_of("plain", "int4") == "int4"
    assert harness.quant_of("big", "int8") == "int4-g32"


async def test_a_load_asking_for_a_quant_is_sized_and_held_that_way(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    write_tiny_gguf(models / "Tiny-F32.gguf")
    harness = EngineHarness([models], device="cpu", include_default=False, kv_cache_mb=8)
    try:
        as_stored = harness.model("Tiny-F32").memory_mb
        entry = await harness.load("Tiny-F32", quant="int8")
        assert entry.quant == "int8"  # `/models` of the node says how it holds the weights
        assert entry.memory_mb < as_stored  # int8 weights: a quarter of the float32 file's
    finally:
        await asyncio.wait_for(harness.aclose(), 30)


def test_bad_quant_values_name_the_file_and_key(tmp_path: Path) -> None:
    node = tmp_path / "neuron.toml"
    node.write_text('quant = "int8"\n[models."smol"]\nquant = "int4-g48"\n')
    with pytest.raises(ConfigError, match=r"neuron.toml.*models\.smol\.quant: Input should be"):
        load_config(node)  # a [models.ID] table is still read as a neuron.toml
    node.write_text('quant = "fp4"\n')
    with pytest.raises(ConfigError, match=r"neuron.toml:1: quant: Input should be 'none'"):
        load_config(node)


async def test_a_gguf_with_int8_quant_is_imported_quantized_and_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORTEX_HOME", str(tmp_path / "home"))
    models = tmp_path / "models"
    models.mkdir()
    write_tiny_gguf(models / "Tiny-F32.gguf")
    harness = EngineHarness(
        [models],
        device="cpu",
        include_default=False,
        kv_cache_mb=8,
        model_quant={"Tiny-F32": "int8"},
    )
    try:
        assert (await harness.load("Tiny-F32")).state == "loaded"
        folder = tmp_path / "home" / "models" / "tiny-f32-int8"
        stored = load_file(folder / "model.safetensors")
        assert "model.layers.0.self_attn.q_proj.qweight" in stored  # matrices kept as int8
        assert "model.layers.0.self_attn.q_proj.weight" not in stored
        request = GenerateRequest(
            model="Tiny-F32",
            messages=[{"role": "user", "content": "hi"}],
            sampling=SamplingOptions(max_tokens=4, temperature=0),
        )
        async with harness.generate(request) as stream:
            events = [event async for event in stream]
        assert events[-1].finish_reason in ("stop", "length")
    finally:
        await asyncio.wait_for(harness.aclose(), 30)


def test_serve_and_import_take_a_quant() -> None:
    from cortex.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["serve", "--quant", "int4-g32"]).quant == "int4-g32"
    assert parser.parse_args(["serve"]).quant is None  # as the checkpoints store them
    assert parser.parse_args(["import", "x.gguf", "--quant", "int4"]).quant == "int4"
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--quant", "int3"])
