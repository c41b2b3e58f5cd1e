"""A tiny random Llama checkpoint that thinks like Qwen3: its template opens `<think>` itself.

The tokenizer is byte-level BPE without merges (one token per byte) plus Qwen's added tokens:
`<|endoftext|>`, `<|im_start|>`, `<|im_end|>` (special) and `<think>`, `</think>`,
`<tool_call>`, `</tool_call>` (not special, as in Qwen3's tokenizer.json). The chat template is
Qwen3-Thinking's shape: the generation prompt ends with `<think>\\n`, or with an empty closed
thought when `enable_thinking` is false; history turns render their `reasoning_content`; a
system message anywhere but first is refused, as strict templates do. Only the `lm_head`
rows of lowercase letters are not zero, so greedy decoding writes letters only: replies never
end on their own and never write a marker, so every path through a reply is the test's choice
(a prefill, `max_tokens`, `thinking_token_budget`, stop tokens). Its generation_config says
`do_sample: false`, so requests that leave the temperature out are greedy too.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from cortex.engine.safetensors import save_file

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ADDED = ["<think>", "</think>", "<tool_call>", "</tool_call>"]
LETTERS = "abcdefghijklmnopqrstuvwxyz"  # the only tokens greedy decoding can pick
HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 64, 2, 4, 2, 128

TEMPLATE = (
    "{% for m in messages %}"
    "{% if m.role == 'system' and not loop.first %}"
    "{{ raise_exception('System message must be at the beginning.') }}"
    "{% endif %}"
    "{{ '<|im_start|>' + m.role + '\\n' }}"
    "{% if m.role == 'assistant' and m.reasoning_content %}"
    "{{ '<think>\\n' + m.reasoning_content + '\\n</think>\\n\\n' }}"
    "{% endif %}"
    "{{ m.content }}{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{% else %}{{ '<think>\\n' }}{% endif %}"
    "{% endif %}"
)
NO_SYSTEM_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CODER_TEMPLATE = (  # Qwen3-Coder's shape: tools announced as `<function=NAME>` XML
    "{% if tools %}{{ '<|im_start|>system\nCall tools as <tool_call><function=NAME>"
    "<parameter=KEY>VALUE</parameter></function></tool_call>. Tools:' }}"
    "{% for t in tools %}{{ ' ' + t.function.name }}{% endfor %}{{ '<|im_end|>\n' }}{% endif %}"
    "{% for m in messages %}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def write_reasoning_model(folder: Path, *, template: str = TEMPLATE, seed: int = 0) -> Path:
    """Write the model into `folder` (created); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED])
    tokenizer.save(str(folder / "tokenizer.json"))
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    eos = [tokenizer.token_to_id("<|im_end|>"), tokenizer.token_to_id("<|endoftext|>")]
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": vocab,
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "eos_token_id": eos[0],
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "generation_config.json").write_text(
        json.dumps({"eos_token_id": eos, "do_sample": False})
    )
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": template}
        )
    )
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.3

    kv = KV_HEADS * HIDDEN // HEADS
    head = torch.zeros(vocab, HIDDEN)  # zero rows are never the argmax of a random row
    for char in LETTERS:
        head[tokenizer.token_to_id(char)] = rand(HIDDEN) * 10
    tensors = {
        "model.embed_tokens.weight": rand(vocab, HIDDEN) * 10,
        "model.norm.weight": torch.ones(HIDDEN),
        "lm_head.weight": head,
    }
    for i in range(LAYERS):
        layer = f"model.layers.{i}."
        tensors |= {
            layer + "self_attn.q_proj.weight": rand(HIDDEN, HIDDEN),
            layer + "self_attn.k_proj.weight": rand(kv, HIDDEN),
            layer + "self_attn.v_proj.weight": rand(kv, HIDDEN),
            layer + "self_attn.o_proj.weight": rand(HIDDEN, HIDDEN),
            layer + "mlp.gate_proj.weight": rand(FFN, HIDDEN),
            layer + "mlp.up_proj.weight": rand(FFN, HIDDEN),
            layer + "mlp.down_proj.weight": rand(HIDDEN, FFN),
            layer + "input_layernorm.weight": torch.ones(HIDDEN),
            layer + "post_attention_layernorm.weight": torch.ones(HIDDEN),
        }
    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "model.safetensors")
    return folder
