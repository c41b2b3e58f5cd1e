"""Tiny random checkpoints made on the spot, for the stand-in hub and model-folder tests.

`tiny_llama_files()` is a whole Hugging Face model repo (config, a byte-level BPE tokenizer with
a ChatML template, safetensors weights, sharded with an index when asked) that the engine loads
and answers with in milliseconds; `tiny_gguf_bytes()` a small GGUF written by gguf-py's
`GGUFWriter`. Both need numpy (and gguf-py), imported when called.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["TINY_CHAT_TEMPLATE", "tiny_gguf_bytes", "tiny_llama_files"]

_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_SHAPE = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def _vocab() -> dict[str, int]:
    from tokenizers import pre_tokenizers

    tokens = _SPECIALS + sorted(pre_tokenizers.ByteLevel.alphabet())
    return {token: i for i, token in enumerate(tokens)}


def _tokenizer_json() -> str:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE(vocab=_vocab(), merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True) for t in _SPECIALS])
    return str(tokenizer.to_str())


def tiny_llama_files(
    *,
    shards: int = 1,
    seed: int = 0,
    model_type: str = "llama",
    context_length: int = 4096,
) -> dict[str, bytes]:
    """The files of a tiny random Llama-layout model repo (about 60 KB of weights).

    Args:
        shards: weight files; more than one adds `model.safetensors.index.json`.
        seed: the weights' random seed.
        model_type: `config.json`'s `model_type` (an unsupported one tests refusals).
        context_length: `max_position_embeddings`.
    """
    import numpy as np

    vocab = len(_vocab())
    hidden, ffn = _SHAPE["hidden_size"], _SHAPE["intermediate_size"]
    head_dim = hidden // _SHAPE["num_attention_heads"]
    kv = _SHAPE["num_key_value_heads"] * head_dim
    rng = np.random.default_rng(seed)

    def rand(*shape: int) -> Any:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    weights: dict[str, Any] = {
        "model.embed_tokens.weight": rand(vocab, hidden),
        "model.norm.weight": np.ones(hidden, np.float32),
    }
    for i in range(_SHAPE["num_hidden_layers"]):
        p = f"model.layers.{i}."
        weights |= {
            p + "self_attn.q_proj.weight": rand(hidden, hidden),
            p + "self_attn.k_proj.weight": rand(kv, hidden),
            p + "self_attn.v_proj.weight": rand(kv, hidden),
            p + "self_attn.o_proj.weight": rand(hidden, hidden),
            p + "mlp.gate_proj.weight": rand(ffn, hidden),
            p + "mlp.up_proj.weight": rand(ffn, hidden),
            p + "mlp.down_proj.weight": rand(hidden, ffn),
            p + "input_layernorm.weight": np.ones(hidden, np.float32),
            p + "post_attention_layernorm.weight": np.ones(hidden, np.float32),
        }
    eos = _SPECIALS.index("<|im_end|>")
    config = {
        **_SHAPE,
        "architectures": ["LlamaForCausalLM"],
        "model_type": model_type,
        "vocab_size": vocab,
        "max_position_embeddings": context_length,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": eos,
        "torch_dtype": "float32",
    }
    files = {
        "config.json": json.dumps(config, indent=2).encode(),
        "generation_config.json": json.dumps({"eos_token_id": eos, "do_sample": False}).encode(),
        "tokenizer.json": _tokenizer_json().encode(),
        "tokenizer_config.json": json.dumps(
            {"eos_token": "<|im_end|>", "chat_template": TINY_CHAT_TEMPLATE}
        ).encode(),
        "README.md": b"# tiny random llama\n",
    }
    names = sorted(weights)
    if shards <= 1:
        files["model.safetensors"] = _safetensors(weights)
        return files
    weight_map: dict[str, str] = {}
    for k in range(shards):
        file_name = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {name: weights[name] for name in names[k::shards]}
        files[file_name] = _safetensors(part)
        weight_map |= dict.fromkeys(part, file_name)
    total = sum(w.nbytes for w in weights.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    files["model.safetensors.index.json"] = json.dumps(index, indent=2).encode()
    return files


def tiny_gguf_bytes(*, seed: int = 0, architecture: str = "llama") -> bytes:
    """A small valid GGUF (float32 tensors, llama metadata, a byte-level vocabulary)."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    hidden, vocab = _SHAPE["hidden_size"], _vocab()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny.gguf"
        writer = gguf.GGUFWriter(str(path), architecture)
        writer.add_block_count(1)
        writer.add_context_length(2048)
        writer.add_embedding_length(hidden)
        writer.add_feed_forward_length(_SHAPE["intermediate_size"])
        writer.add_head_count(_SHAPE["num_attention_heads"])
        writer.add_head_count_kv(_SHAPE["num_key_value_heads"])
        writer.add_tokenizer_model("gpt2")
        writer.add_token_list(list(vocab))
        writer.add_tensor("token_embd.weight", rng.standard_normal((len(vocab), hidden), "f4"))
        writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path.read_bytes()


def _safetensors(weights: dict[str, Any]) -> bytes:
    """The bytes of a safetensors file holding `weights` (name -> numpy array), by our writer."""
    import torch

    from cortex.engine.safetensors import save_file

    with tempfile.TemporaryDirectory(prefix="cortex-tiny-") as folder:
        path = Path(folder) / "weights.safetensors"
        save_file({name: torch.from_numpy(array) for name, array in weights.items()}, path)
        return path.read_bytes()
