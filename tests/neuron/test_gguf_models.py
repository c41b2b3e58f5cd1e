"""A `.gguf` file in `models_dirs`: imported on first load (progress in `/models`), then served."""

from __future__ import annotations

import asyncio
from pathlib import Path

import gguf
import numpy as np
import pytest

from cortex.neuron import GenerateRequest, SamplingOptions
from cortex.neuron.engine_harness import EngineHarness

HIDDEN, HEADS, KV_HEADS, FFN, LAYERS = 64, 4, 2, 128, 2
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_level_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values (its `bytes_to_unicode`)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    chars, extra = {}, 0
    for byte in range(256):
        if byte in keep:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def write_tiny_gguf(path: Path) -> None:
    vocab = SPECIALS + byte_level_alphabet()
    rng = np.random.default_rng(0)

    def rand(*shape: int) -> np.ndarray:  # type: ignore[type-arg]
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(len(vocab))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(vocab)
    writer.add_token_types([3] * len(SPECIALS) + [1] * (len(vocab) - len(SPECIALS)))
    writer.add_token_merges([])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template(TEMPLATE)
    writer.add_tensor("token_embd.weight", rand(len(vocab), HIDDEN))
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, dtype=np.float32))
    kv = KV_HEADS * HIDDEN // HEADS
    for i in range(LAYERS):
        for name, shape in {
            "attn_q": (HIDDEN, HIDDEN),
            "attn_k": (kv, HIDDEN),
            "attn_v": (kv, HIDDEN),
            "attn_output": (HIDDEN, HIDDEN),
            "ffn_gate": (FFN, HIDDEN),
            "ffn_up": (FFN, HIDDEN),
            "ffn_down": (HIDDEN, FFN),
        }.items():
            writer.add_tensor(f"blk.{i}.{name}.weight", rand(*shape))
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


async def test_a_gguf_is_imported_on_first_load_and_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORTEX_HOME", str(tmp_path / "home"))
    models = tmp_path / "models"
    models.mkdir()
    write_tiny_gguf(models / "Tiny-F32.gguf")
    harness = EngineHarness([models], device="cpu", include_default=False, kv_cache_mb=8)
    assert [(e.id, e.state, e.architecture) for e in harness.models()] == [
        ("Tiny-F32", "available", "LlamaForCausalLM")
    ]
    load = asyncio.create_task(harness.load("Tiny-F32"))
    phases = []
    while not load.done():
        progress = harness.model("Tiny-F32").progress
        if progress and (not phases or phases[-1] != progress["phase"]):
            phases.append(progress["phase"])
        await asyncio.sleep(0)  # every phase awaits a thread: this loop sees each one
    assert (await load).state == "loaded"
    # (The registry says `loading` until the opener reports its own first phase.)
    assert phases[-3:] == ["importing", "loading", "warming"]
    # the folder is named for the import's dtype, which the device policy picks for this CPU
    assert [*(tmp_path / "home" / "models").glob("tiny-f32*/model.safetensors")]
    request = GenerateRequest(
        model="Tiny-F32",
        messages=[{"role": "user", "content": "hi"}],
        sampling=SamplingOptions(max_tokens=4, temperature=0),
    )
    async with harness.generate(request) as stream:
        events = [event async for event in stream]
    assert events[-1].usage is not None and events[-1].usage.prompt_tokens > 3
    assert events[-1].finish_reason in ("stop", "length")
    await harness.aclose()
    assert harness.model("Tiny-F32").state == "available"
