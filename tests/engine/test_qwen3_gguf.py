"""Qwen3 and Qwen3-MoE GGUFs, written by gguf-py from tiny transformers checkpoints, imported.

The GGUF is laid out as llama.cpp's converter writes these architectures (no Q/K permutation,
experts stacked per projection, `{arch}.expert_*` metadata); the import must give back the
checkpoint's tensors exactly and a model whose logits match transformers'.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch

from cortex.engine import load_model
from cortex.engine.gguf import import_gguf
from cortex.engine.safetensors import load_file

from .test_gguf_synthetic import MERGES, SPECIALS, _vocab
from .test_qwen3_tiny import CONFIGS, make_checkpoint

pytest.importorskip("transformers")

# Hugging Face name (after `model.layers.N.`) -> GGUF name (after `blk.N.`).
LAYER_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "mlp.gate": "ffn_gate_inp",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def _gguf_tensors(hf_state: dict[str, torch.Tensor]) -> dict[str, np.ndarray[Any, Any]]:
    """transformers' state dict in llama.cpp's names, experts stacked per projection."""
    out: dict[str, np.ndarray[Any, Any]] = {}
    for name, tensor in hf_state.items():
        values = tensor.float().numpy()
        if name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
            stem = {"model.embed_tokens": "token_embd", "model.norm": "output_norm"}.get(
                name.rsplit(".", 1)[0], "output"
            )
            out[f"{stem}.weight"] = values
            continue
        _, _, layer, *rest = name.split(".")
        inner = ".".join(rest)
        if inner == "mlp.experts.gate_up_proj":  # (experts, 2 * width, hidden), fused by v5
            width = values.shape[1] // 2
            out[f"blk.{layer}.ffn_gate_exps.weight"] = values[:, :width]
            out[f"blk.{layer}.ffn_up_exps.weight"] = values[:, width:]
        elif inner == "mlp.experts.down_proj":
            out[f"blk.{layer}.ffn_down_exps.weight"] = values
        else:
            stem, suffix = inner.rsplit(".", 1)
            out[f"blk.{layer}.{LAYER_NAMES[stem]}.{suffix}"] = values
    return out


def write_qwen3_gguf(path: Path, raw: dict[str, Any], hf: Any) -> None:
    """Write `hf` (a tiny Qwen3 or Qwen3-MoE) as llama.cpp would, with a small BPE tokenizer."""
    moe = raw["model_type"] == "qwen3_moe"
    arch = "qwen3moe" if moe else "qwen3"
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(raw["num_hidden_layers"])
    writer.add_context_length(raw["max_position_embeddings"])
    writer.add_embedding_length(raw["hidden_size"])
    writer.add_feed_forward_length(raw["intermediate_size"])
    writer.add_head_count(raw["num_attention_heads"])
    writer.add_head_count_kv(raw["num_key_value_heads"])
    writer.add_key_length(raw["head_dim"])
    writer.add_value_length(raw["head_dim"])
    writer.add_rope_dimension_count(raw["head_dim"])
    writer.add_rope_freq_base(raw["rope_theta"])
    writer.add_layer_norm_rms_eps(raw["rms_norm_eps"])
    writer.add_vocab_size(raw["vocab_size"])
    if moe:
        writer.add_expert_count(raw["num_experts"])
        writer.add_expert_used_count(raw["num_experts_per_tok"])
        writer.add_expert_feed_forward_length(raw["moe_intermediate_size"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(_vocab())
    writer.add_token_types([3] * len(SPECIALS) + [1] * (len(_vocab()) - len(SPECIALS)))
    writer.add_token_merges(MERGES)
    writer.add_eos_token_id(2)
    writer.add_string("general.name", "tiny qwen3")
    state = hf.state_dict()
    if raw["tie_word_embeddings"]:
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    for name, values in _gguf_tensors(state).items():
        writer.add_tensor(name, np.ascontiguousarray(values, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("name", ["qwen3", "qwen3-untied", "qwen3_moe"])
def test_qwen3_gguf_imports_and_matches_transformers(tmp_path: Path, name: str) -> None:
    raw = {**CONFIGS[name], "vocab_size": len(_vocab())}
    if name == "qwen3_moe":
        raw["mlp_only_layers"] = []  # llama.cpp's qwen3moe graph has experts in every layer
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    hf = make_checkpoint(raw, hf_dir)
    source = tmp_path / f"{name}.gguf"
    write_qwen3_gguf(source, raw, hf)

    out = import_gguf(source, tmp_path / "imported", progress=False)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == raw["model_type"]
    assert config["tie_word_embeddings"] is raw["tie_word_embeddings"]
    if name == "qwen3_moe":
        assert config["num_experts"] == 8 and config["num_experts_per_tok"] == 2
        assert config["moe_intermediate_size"] == 32 and config["norm_topk_prob"] is True
    # The tensors come back exactly as transformers saved them (no permutation, experts split).
    ours = load_file(out / "model.safetensors")
    theirs = load_file(hf_dir / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for key, tensor in theirs.items():
        assert torch.equal(ours[key], tensor), key

    model = load_model(out)
    ids = torch.randint(3, raw["vocab_size"], (60,), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = hf(ids[None]).logits[0]
    assert (model.forward(ids) - expected).abs().max().item() < 1e-3
