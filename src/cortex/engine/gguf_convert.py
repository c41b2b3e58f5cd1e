"""The GGUF -> Hugging Face conversion behind `import_gguf`: config, tensors, tokenizer files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from gguf import GGUFReader, ReaderTensor
from gguf.quants import dequantize

from cortex.engine.gguf import GGUFError
from cortex.engine.gguf_header import read_gguf_header
from cortex.engine.gguf_tokenizer import UnsupportedTokenizerError, build_tokenizer_files
from cortex.engine.safetensors import write_tensors

__all__ = ["convert_gguf", "hf_config", "unpermute"]

_TORCH_DTYPES: Final = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# GGUF tensor names -> Hugging Face names (`blk.N.` becomes `model.layers.N.`).
_GLOBAL_TENSORS: Final = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_LAYER_TENSORS: Final = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q_norm": "self_attn.q_norm",  # Qwen3
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate_inp": "mlp.gate",  # Qwen3-MoE's router
}
# Experts stacked in one (experts, rows, cols) tensor -> Hugging Face's one tensor per expert.
_EXPERT_TENSORS: Final = {
    "ffn_gate_exps": "gate_proj",
    "ffn_up_exps": "up_proj",
    "ffn_down_exps": "down_proj",
}
# general.architecture -> (HF model_type, HF class); only llama's Q/K rows are permuted.
_ARCHITECTURES: Final = {
    "llama": ("llama", "LlamaForCausalLM"),
    "qwen2": ("qwen2", "Qwen2ForCausalLM"),
    "qwen3": ("qwen3", "Qwen3ForCausalLM"),
    "qwen3moe": ("qwen3_moe", "Qwen3MoeForCausalLM"),
}
_PERMUTED_ARCHITECTURES: Final = frozenset({"llama"})


def _open(source: Path) -> tuple[GGUFReader, dict[str, Any]]:
    try:
        read_gguf_header(source)  # bounded first: the gguf reader trusts the counts it reads
    except ValueError as exc:
        raise GGUFError(source, f"not a readable GGUF file: {exc}") from None
    try:
        reader = GGUFReader(source)
        meta = {name: field.contents() for name, field in reader.fields.items()}
    except Exception as exc:  # the gguf reader raises bare ValueError/IndexError/... on damage
        raise GGUFError(source, f"not a readable GGUF file (truncated or corrupt?): {exc}") from exc
    size = source.stat().st_size
    for tensor in reader.tensors:
        if tensor.data_offset + tensor.n_bytes > size:
            raise GGUFError(source, f"tensor {tensor.name} runs past the end of the file")
    return reader, meta


def _f32(value: Any) -> float:
    """A GGUF float32 as the shortest decimal that round-trips (1e-05, not 9.9999997e-06)."""
    return float(str(np.float32(value)))


def _llama3_rope_scaling(
    source: Path, factors: np.ndarray[Any, Any], theta: float, head_dim: int
) -> dict[str, Any]:
    """Recover Llama 3's `rope_scaling` from the per-frequency factors llama.cpp stores."""
    factor, low, high, original = float(factors.max()), 1.0, 4.0, 8192
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * np.pi / freqs
    smooth = (original / wavelen - low) / (high - low)
    expected = np.where(
        wavelen < original / high,
        1.0,
        np.where(wavelen > original / low, factor, 1 / ((1 - smooth) / factor + smooth)),
    )
    if factors.shape != expected.shape or not np.allclose(factors, expected, rtol=1e-4):
        raise GGUFError(source, "rope_freqs does not match Llama 3 rope scaling; unsupported")
    return {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": low,
        "high_freq_factor": high,
        "original_max_position_embeddings": original,
    }


def hf_config(source: Path, reader: GGUFReader, meta: dict[str, Any]) -> dict[str, Any]:
    """The Hugging Face `config.json` of a GGUF file, from its metadata and tensor names.

    Raises:
        GGUFError: an unsupported architecture, or required metadata is missing.
    """
    arch = meta.get("general.architecture")
    if arch not in _ARCHITECTURES:
        raise GGUFError(
            source, f"architecture {arch!r} is not supported (supported: {sorted(_ARCHITECTURES)})"
        )
    model_type, hf_class = _ARCHITECTURES[arch]
    if arch == "llama" and "mistral" in str(meta.get("general.name", "")).lower():
        model_type, hf_class = "mistral", "MistralForCausalLM"

    def need(key: str) -> Any:
        if f"{arch}.{key}" not in meta:
            raise GGUFError(source, f"metadata key {arch}.{key} is missing")
        return meta[f"{arch}.{key}"]

    heads, hidden = int(need("attention.head_count")), int(need("embedding_length"))
    head_dim = int(meta.get(f"{arch}.attention.key_length", hidden // heads))
    rotary = meta.get(f"{arch}.rope.dimension_count", head_dim)
    if rotary != head_dim:
        raise GGUFError(source, f"partial rotary ({rotary} of {head_dim} dims) is not supported")
    names = {t.name for t in reader.tensors}
    embed = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if embed is None:
        raise GGUFError(source, "tensor token_embd.weight is missing")
    theta = _f32(meta.get(f"{arch}.rope.freq_base", 10000.0))
    config: dict[str, Any] = {
        "architectures": [hf_class],
        "model_type": model_type,
        "vocab_size": int(meta.get(f"{arch}.vocab_size", int(embed.shape[1]))),
        "hidden_size": hidden,
        "intermediate_size": int(
            meta.get(f"{arch}.feed_forward_length", 0)
            if arch == "qwen3moe"  # MoE files need it only for dense layers
            else need("feed_forward_length")
        ),
        "num_hidden_layers": int(need("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get(f"{arch}.attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "max_position_embeddings": int(need("context_length")),
        "rms_norm_eps": _f32(need("attention.layer_norm_rms_epsilon")),
        "rope_theta": theta,
        "hidden_act": "silu",
        "tie_word_embeddings": "output.weight" not in names,
        "attention_bias": "blk.0.attn_q.bias" in names,
        "mlp_bias": False,
    }
    for key, hf_key in (
        ("bos", "bos_token_id"),
        ("eos", "eos_token_id"),
        ("padding", "pad_token_id"),
    ):
        if f"tokenizer.ggml.{key}_token_id" in meta:
            config[hf_key] = int(meta[f"tokenizer.ggml.{key}_token_id"])
    scaling = meta.get(f"{arch}.rope.scaling.type")
    if scaling in ("linear", "yarn"):
        config["rope_scaling"] = {"rope_type": scaling, "factor": _f32(need("rope.scaling.factor"))}
        if f"{arch}.rope.scaling.original_context_length" in meta:
            original = int(meta[f"{arch}.rope.scaling.original_context_length"])
            config["rope_scaling"]["original_max_position_embeddings"] = original
    elif "rope_freqs.weight" in names:
        freqs = next(t for t in reader.tensors if t.name == "rope_freqs.weight")
        factors = dequantize(freqs.data, freqs.tensor_type).astype(np.float64).reshape(-1)
        config["rope_scaling"] = _llama3_rope_scaling(source, factors, theta, head_dim)
    if f"{arch}.attention.sliding_window" in meta:
        config["sliding_window"] = int(meta[f"{arch}.attention.sliding_window"])
    if arch == "qwen3moe":
        layers = config["num_hidden_layers"]
        config |= {
            "num_experts": int(need("expert_count")),
            "num_experts_per_tok": int(need("expert_used_count")),
            "moe_intermediate_size": int(need("expert_feed_forward_length")),
            # llama.cpp always renormalises Qwen3-MoE's top-k weights unless the file says not.
            "norm_topk_prob": bool(meta.get(f"{arch}.expert_weights_norm", True)),
            "decoder_sparse_step": 1,
            "mlp_only_layers": [
                i for i in range(layers) if f"blk.{i}.ffn_gate_inp.weight" not in names
            ],
        }
    return config


def _hf_names(source: Path, tensor: ReaderTensor) -> list[tuple[str, int | None]]:
    """The Hugging Face names a GGUF tensor becomes, each with its expert index (or None).

    Most tensors become one; stacked experts become one per expert; tensors folded into the
    config (rope frequencies) none.
    """
    gguf_name = tensor.name
    if gguf_name == "rope_freqs.weight":
        return []
    stem, _, suffix = gguf_name.rpartition(".")
    if stem in _GLOBAL_TENSORS:
        return [(f"{_GLOBAL_TENSORS[stem]}.{suffix}", None)]
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit():
        prefix = f"model.layers.{parts[1]}"
        if parts[2] in _LAYER_TENSORS:
            return [(f"{prefix}.{_LAYER_TENSORS[parts[2]]}.{suffix}", None)]
        if parts[2] in _EXPERT_TENSORS and len(tensor.shape) == 3:
            projection = _EXPERT_TENSORS[parts[2]]
            experts = int(tensor.shape[2])  # GGUF lists dims fastest-first
            return [(f"{prefix}.mlp.experts.{e}.{projection}.{suffix}", e) for e in range(experts)]
    raise GGUFError(source, f"tensor {gguf_name} has no Hugging Face equivalent here")


def unpermute(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's `permute`: each head's rows back from interleaved pairs to two halves."""
    head_dim = weight.shape[0] // heads
    return (
        weight.reshape(heads, head_dim // 2, 2, *weight.shape[1:])
        .transpose(1, 2)
        .reshape(weight.shape)
    )


def _dequantized(source: Path, tensor: ReaderTensor) -> torch.Tensor:
    """A GGUF tensor as float32 in PyTorch's (out, in) order (GGUF lists dims fastest-first)."""
    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    try:
        values = dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False)
        values = values.reshape(shape)
    except NotImplementedError:
        kind = tensor.tensor_type.name
        raise GGUFError(source, f"tensor {tensor.name}: cannot dequantise type {kind}") from None
    except ValueError as exc:  # its data does not match its type and shape: a damaged file
        raise GGUFError(source, f"tensor {tensor.name} is damaged: {exc}") from None
    return torch.from_numpy(values if values.flags.writeable else values.copy())


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _generation_config(meta: dict[str, Any]) -> dict[str, Any]:
    """Token ids and any sampling defaults the file carries (`general.sampling.*`)."""
    config: dict[str, Any] = {}
    eos = [
        meta[k] for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id") if k in meta
    ]
    eos = list(dict.fromkeys(int(i) for i in eos))
    if "tokenizer.ggml.bos_token_id" in meta:
        config["bos_token_id"] = int(meta["tokenizer.ggml.bos_token_id"])
    if eos:
        config["eos_token_id"] = eos[0] if len(eos) == 1 else eos
    if "tokenizer.ggml.padding_token_id" in meta:
        config["pad_token_id"] = int(meta["tokenizer.ggml.padding_token_id"])
    sampling = {"temp": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p"}
    sampling["penalty_repeat"] = "repetition_penalty"
    for key, hf_key in sampling.items():
        value = meta.get(f"general.sampling.{key}")
        if value is not None:
            config[hf_key] = int(value) if hf_key == "top_k" else _f32(value)
    if "temperature" in config:
        config["do_sample"] = config["temperature"] > 0
    return config


def convert_gguf(
    source: Path, work: Path, dtype: str, *, progress: bool, quant_bits: int | None = None
) -> None:
    """Write the model folder for the GGUF file `source` into the (empty) folder `work`.

    Args:
        source: the `.gguf` file.
        work: an existing empty folder; `import_gguf` renames it into place afterwards.
        dtype: `"float32"` or `"bfloat16"`, the dtype of the written weights.
        progress: show a rich progress bar on stderr.
        quant_bits: 4 or 8 keeps the matrices quantized (`gguf_quant.QuantizedWriter`: Q4
            types repacked into int4, the rest int8 or int4); None writes floats in `dtype`.

    Raises:
        GGUFError: the file is unreadable, truncated or of an unsupported kind.
    """
    torch_dtype = _TORCH_DTYPES[dtype]
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    console = Console(stderr=True)
    with Progress(*columns, TimeElapsedColumn(), console=console, disable=not progress) as bar:
        reading = bar.add_task(f"reading {source.name}", total=1)
        reader, meta = _open(source)
        bar.advance(reading)
        config = hf_config(source, reader, meta)
        tokenizing = bar.add_task("building the tokenizer", total=1)
        try:  # before the long part, so an unsupported tokenizer fails fast
            files = build_tokenizer_files(meta, config["max_position_embeddings"])
        except UnsupportedTokenizerError as exc:
            raise GGUFError(source, str(exc)) from None
        for file_name, content in files.items():
            _write_json(work / file_name, content)
        bar.advance(tokenizing)
        config["torch_dtype"] = dtype
        permute = meta["general.architecture"] in _PERMUTED_ARCHITECTURES
        heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
        by_name: dict[str, tuple[ReaderTensor, int | None]] = {}
        for tensor in reader.tensors:
            for hf_name, expert in _hf_names(source, tensor):
                by_name[hf_name] = (tensor, expert)
        layout = {}
        for name, (t, expert) in by_name.items():
            shape = tuple(int(d) for d in reversed(t.shape.tolist()))
            layout[name] = (torch_dtype, shape if expert is None else shape[1:])
        task = bar.add_task("dequantising tensors", total=len(layout))
        # The file is written in name order, so one layer's experts come together: its stacked
        # tensors are dequantised once and kept until the next layer's are needed.
        stacked: dict[str, torch.Tensor] = {}

        def produce(name: str) -> torch.Tensor:
            tensor, expert = by_name[name]
            if expert is None:
                weight = _dequantized(source, tensor)
            else:
                if tensor.name not in stacked:
                    layer = tensor.name.split(".")[1]
                    if any(key.split(".")[1] != layer for key in stacked):
                        stacked.clear()
                    stacked[tensor.name] = _dequantized(source, tensor)
                weight = stacked[tensor.name][expert]
            kind = tensor.name.split(".")[-2]
            if permute and kind in heads:
                weight = unpermute(weight, heads[kind])
            bar.advance(task)
            return weight.to(torch_dtype)

        if quant_bits is not None and quant_bits in (4, 8):
            from cortex.engine.gguf_quant import QuantizedWriter

            def reorder(tensor: ReaderTensor, rows: torch.Tensor) -> torch.Tensor:
                kind = tensor.name.split(".")[-2]
                return unpermute(rows, heads[kind]) if permute and kind in heads else rows

            def plain(name: str) -> ReaderTensor | None:  # stacked experts stay float
                tensor, expert = by_name[name]
                return tensor if expert is None else None

            writer = QuantizedWriter(
                layout, plain, quant_bits, produce, reorder, lambda: bar.advance(task)
            )
            layout, produce = writer.layout, writer.produce
            config["quantization_config"] = {"quant_method": "cortex", "bits": quant_bits}
        metadata = {"format": "pt", "source": source.name}
        write_tensors(work / "model.safetensors", layout, produce, metadata)
    _write_json(work / "config.json", config)
    _write_json(work / "generation_config.json", _generation_config(meta))
