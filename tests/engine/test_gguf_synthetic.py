"""GGUF import of tiny GGUF files written in the test: every quant type, permutation, caching, CLI.

transformers (its own torch dequantisers and loader) is the oracle for tensors and tokenizer ids.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q

from cortex.cli import main as cli_main
from cortex.engine.gguf import GGUFError, import_gguf, main_import
from cortex.engine.safetensors import load_file

HIDDEN, HEADS, KV_HEADS, FFN, LAYERS = 256, 4, 2, 512, 2
HEAD_DIM = HIDDEN // HEADS
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "Ġa n", "e r", "1 2"]
# The order every 2-D weight cycles through, so each type appears in every file.
WEIGHT_TYPES = [Q.Q4_1, Q.Q8_0, Q.Q4_0, Q.Q4_K, Q.Q6_K, Q.F16, Q.BF16, Q.F32]
# Byte offsets of the float16 scale fields inside one block, to keep random blocks finite.
HALF_FIELDS = {Q.Q4_K: (0, 2), Q.Q6_K: (208,)}
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
)


def _vocab() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    merged = ["".join(m.split(" ")) for m in MERGES]
    return SPECIALS + list(bytes_to_unicode().values()) + merged


def _hf_weights(arch: str, seed: int) -> dict[str, torch.Tensor]:
    """Random weights in Hugging Face names and layout."""
    g = torch.Generator().manual_seed(seed)
    vocab = len(_vocab())

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.1

    weights = {"model.embed_tokens.weight": rand(vocab, HIDDEN), "model.norm.weight": rand(HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        weights |= {
            p + "self_attn.q_proj.weight": rand(HIDDEN, HIDDEN),
            p + "self_attn.k_proj.weight": rand(KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.v_proj.weight": rand(KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.o_proj.weight": rand(HIDDEN, HIDDEN),
            p + "mlp.gate_proj.weight": rand(FFN, HIDDEN),
            p + "mlp.up_proj.weight": rand(FFN, HIDDEN),
            p + "mlp.down_proj.weight": rand(HIDDEN, FFN),
            p + "input_layernorm.weight": rand(HIDDEN),
            p + "post_attention_layernorm.weight": rand(HIDDEN),
        }
        if arch == "qwen2":
            weights[p + "self_attn.q_proj.bias"] = rand(HIDDEN)
            weights[p + "self_attn.k_proj.bias"] = rand(KV_HEADS * HEAD_DIM)
            weights[p + "self_attn.v_proj.bias"] = rand(KV_HEADS * HEAD_DIM)
    return weights


GGUF_NAMES = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def _gguf_name(hf_name: str) -> str:
    stem, _, suffix = hf_name.rpartition(".")
    if stem in GGUF_NAMES:
        return f"{GGUF_NAMES[stem]}.{suffix}"
    _, _, layer, *rest = stem.split(".")
    return f"blk.{layer}.{GGUF_NAMES['.'.join(rest)]}.{suffix}"


def _llama_cpp_permute(w: np.ndarray[Any, Any], heads: int) -> np.ndarray[Any, Any]:
    """llama.cpp convert_hf_to_gguf.py `LlamaModel.permute`, applied to Q and K rows."""
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def _encode(
    values: np.ndarray[Any, Any], qtype: Q, rng: np.random.Generator
) -> np.ndarray[Any, Any]:
    if qtype not in HALF_FIELDS:  # gguf can quantise these itself
        return gguf.quants.quantize(values, qtype)
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    rows, cols = values.shape
    blocks = rng.integers(0, 256, size=(rows, cols // block_elems, block_bytes), dtype=np.uint8)
    for offset in HALF_FIELDS[qtype]:
        scale = rng.uniform(-0.02, 0.02, size=blocks.shape[:2]).astype(np.float16)
        blocks[:, :, offset : offset + 2] = scale.view(np.uint8).reshape(*blocks.shape[:2], 2)
    return blocks.reshape(rows, -1)


def write_gguf(
    path: Path,
    *,
    arch: str = "llama",
    pre: str = "smollm",
    seed: int = 0,
    types: list[Q] | None = None,
    rope_freqs: np.ndarray[Any, Any] | None = None,
    last: tuple[str, Q] | None = None,
) -> dict[str, torch.Tensor]:
    """Write a tiny GGUF the way llama.cpp would; return the Hugging Face weights it encodes."""
    weights = _hf_weights(arch, seed)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(LAYERS)
    writer.add_context_length(512)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(500000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(len(_vocab()))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(_vocab())
    writer.add_token_types([3] * len(SPECIALS) + [1] * (len(_vocab()) - len(SPECIALS)))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(False)
    writer.add_chat_template(TEMPLATE)
    writer.add_string("general.name", "tiny test model")
    writer.add_float32("general.sampling.temp", 0.7)
    writer.add_uint32("general.sampling.top_k", 40)
    cycle = iter(types * 100) if types else iter(WEIGHT_TYPES * 100)
    for hf_name, tensor in weights.items():
        values = tensor.numpy()
        if arch == "llama" and ("q_proj" in hf_name or "k_proj" in hf_name):
            values = _llama_cpp_permute(values, HEADS if "q_proj" in hf_name else KV_HEADS)
        qtype = next(cycle) if values.ndim == 2 else Q.F32
        if qtype in (Q.F32, Q.F16):
            writer.add_tensor(
                _gguf_name(hf_name), values.astype(np.float16 if qtype == Q.F16 else np.float32)
            )
        else:
            writer.add_tensor(_gguf_name(hf_name), _encode(values, qtype, rng), raw_dtype=qtype)
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", rope_freqs.astype(np.float32))
    if last is not None:
        name, qtype = last
        block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        raw = np.zeros((4, HIDDEN // block_elems * block_bytes), dtype=np.uint8)
        writer.add_tensor(name, raw, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return weights


def _transformers_state(path: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    return {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_every_quant_type_matches_transformers(tmp_path: Path, arch: str) -> None:
    source = tmp_path / f"tiny-{arch}.gguf"
    write_gguf(source, arch=arch)
    ours = load_file(import_gguf(source, tmp_path / "out", progress=False) / "model.safetensors")
    theirs = _transformers_state(source)
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        torch.testing.assert_close(tensor, theirs[name], rtol=0, atol=0, msg=name)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == arch
    assert config["attention_bias"] is (arch == "qwen2")


def test_float32_import_restores_the_hugging_face_weights_exactly(tmp_path: Path) -> None:
    """llama.cpp permutes Q/K rows; the import must give back the original rows bit for bit."""
    source = tmp_path / "tiny.gguf"
    original = write_gguf(source, types=[Q.F32])
    ours = load_file(import_gguf(source, tmp_path / "out", progress=False) / "model.safetensors")
    assert ours.keys() == original.keys()
    for name, tensor in original.items():
        assert torch.equal(ours[name], tensor), name


def test_bfloat16_import(tmp_path: Path) -> None:
    source = tmp_path / "tiny.gguf"
    original = write_gguf(source, types=[Q.F32])
    out = import_gguf(source, tmp_path / "out", dtype="bfloat16", progress=False)
    ours = load_file(out / "model.safetensors")
    assert all(t.dtype == torch.bfloat16 for t in ours.values())
    assert torch.equal(ours["model.norm.weight"], original["model.norm.weight"].bfloat16())
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"


@pytest.mark.parametrize("pre", ["smollm", "llama-bpe"])
def test_tokenizer_ids_match_transformers(tmp_path: Path, pre: str) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    source = tmp_path / "tiny.gguf"
    write_gguf(source, pre=pre, types=[Q.F32])
    out = import_gguf(source, tmp_path / "out", progress=False)
    ours = Tokenizer.from_file(str(out / "tokenizer.json"))
    theirs = AutoTokenizer.from_pretrained(tmp_path, gguf_file=source.name)
    for text in [
        "the answer",
        "  12345 in",
        "Ünïcödé 日本 🤖",
        "<|im_start|>hi<|im_end|>",
        "a\n\n b",
    ]:
        ids = theirs(text)["input_ids"]
        assert ours.encode(text).ids == ids, text
        assert ours.decode(ids, skip_special_tokens=False) == theirs.decode(ids)
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["chat_template"] == TEMPLATE
    assert (config["bos_token"], config["eos_token"], config["pad_token"]) == tuple(
        SPECIALS[i] for i in (1, 2, 0)
    )
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation == {
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "temperature": 0.7,
        "top_k": 40,
        "do_sample": True,
    }


def test_llama3_rope_frequencies_become_rope_scaling(tmp_path: Path) -> None:
    factor, low, high, original = 8.0, 1.0, 4.0, 8192
    freqs = 1.0 / 500000.0 ** (np.arange(0, HEAD_DIM, 2) / HEAD_DIM)
    wavelen = 2 * np.pi / freqs
    smooth = (original / wavelen - low) / (high - low)
    factors = np.where(
        wavelen < original / high,
        1.0,
        np.where(wavelen > original / low, factor, 1 / ((1 - smooth) / factor + smooth)),
    )
    source = tmp_path / "tiny.gguf"
    write_gguf(source, types=[Q.F32], rope_freqs=factors)
    config = json.loads(
        (import_gguf(source, tmp_path / "out", progress=False) / "config.json").read_text()
    )
    assert config["rope_scaling"] == {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    write_gguf(source, types=[Q.F32], rope_freqs=factors[::-1].copy())
    with pytest.raises(GGUFError, match="rope_freqs"):
        import_gguf(source, tmp_path / "other", progress=False)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def test_import_is_cached_and_redone_when_the_source_changes(tmp_path: Path) -> None:
    source = tmp_path / "tiny.gguf"
    write_gguf(source, types=[Q.Q8_0])
    out = import_gguf(source, tmp_path / "out", progress=False)
    first = (out / "model.safetensors").stat()
    assert import_gguf(source, out, progress=False) == out
    again = (out / "model.safetensors").stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)  # not rewritten
    write_gguf(source, types=[Q.F32], seed=1)  # a new file at the same path
    os.utime(source, ns=(first.st_mtime_ns + 10**9, first.st_mtime_ns + 10**9))
    import_gguf(source, out, progress=False)
    assert (out / "model.safetensors").stat().st_ino != first.st_ino
    (out / "model.safetensors").unlink()  # a damaged cache is made again
    import_gguf(source, out, progress=False)
    assert (out / "model.safetensors").is_file()
    assert _leftovers(tmp_path) == []


def test_default_output_folder_is_in_cortex_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORTEX_HOME", str(tmp_path / "home"))
    source = tmp_path / "Tiny-Model.Q8_0.gguf"
    write_gguf(source, types=[Q.Q8_0])
    assert import_gguf(source, progress=False) == tmp_path / "home" / "models" / "tiny-model.q8_0"
    bf16 = import_gguf(source, dtype="bfloat16", progress=False)
    assert bf16 == tmp_path / "home" / "models" / "tiny-model.q8_0-bf16"


def test_a_failed_import_leaves_no_half_folder(tmp_path: Path) -> None:
    source = tmp_path / "tiny.gguf"
    write_gguf(source, types=[Q.F32], last=("output.weight", Q.Q8_1))  # fails mid-write
    with pytest.raises(GGUFError, match="cannot dequantise type Q8_1"):
        import_gguf(source, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.01, 0.2, 0.5, 0.9, 0.9999])
def test_truncated_files_are_clear_errors(tmp_path: Path, fraction: float) -> None:
    source = tmp_path / "tiny.gguf"
    write_gguf(source, types=[Q.Q4_K, Q.F16])
    blob = source.read_bytes()
    source.write_bytes(blob[: int(len(blob) * fraction)])
    with pytest.raises(GGUFError, match=r"truncated or corrupt|not a readable GGUF file"):
        import_gguf(source, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert _leftovers(tmp_path) == []


def test_an_unwritable_output_folder_is_a_gguf_error(tmp_path: Path) -> None:
    source = tmp_path / "tiny.gguf"
    write_gguf(source, types=[Q.F32])
    (tmp_path / "file").write_text("")
    with pytest.raises(GGUFError, match="cannot write"):
        import_gguf(source, tmp_path / "file" / "out", progress=False)


def test_a_foreign_output_folder_is_not_overwritten(tmp_path: Path) -> None:
    source = tmp_path / "tiny.gguf"
    write_gguf(source, types=[Q.F32])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(GGUFError, match="not a cortex import"):
        import_gguf(source, tmp_path / "mine", progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_unsupported_architecture_and_tensors_are_clear_errors(tmp_path: Path) -> None:
    source = tmp_path / "tiny.gguf"
    write_gguf(source, types=[Q.F32], last=("blk.0.mystery.weight", Q.F16))
    with pytest.raises(GGUFError, match=r"blk\.0\.mystery\.weight has no Hugging Face equivalent"):
        import_gguf(source, tmp_path / "out", progress=False)
    with pytest.raises(GGUFError, match="no such file"):
        import_gguf(tmp_path / "missing.gguf", tmp_path / "out", progress=False)
    source.write_bytes(b"not a gguf at all")
    with pytest.raises(GGUFError, match="not a readable GGUF"):
        import_gguf(source, tmp_path / "out", progress=False)


def test_cli_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "tiny.gguf"
    write_gguf(source, types=[Q.Q4_1])
    assert (
        cli_main(["import", str(source), "--out", str(tmp_path / "out"), "--dtype", "bfloat16"])
        == 0
    )
    assert capsys.readouterr().out.strip() == str(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert main_import(str(tmp_path / "missing.gguf"), None, "float32") == 1
    assert "no such file" in capsys.readouterr().err
