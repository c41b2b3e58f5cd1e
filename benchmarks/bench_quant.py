"""Weight-only quantization of the default model: quality, memory and the kernel-only ceiling.

For each way of holding SmolLM2-135M-Instruct's weights (float32, `bf16`, `int8`, `int4` (group
sizes 32 and 64 mixed by matrix), `int4-g32`, `int4-g64`, and the GGUF imported with
`--quant int4`, whose Q4_1 blocks are kept as they are), in one process on this machine:

* perplexity on `benchmarks/data/lighthouses.txt` (2,737 tokens of prose written for this
  repo), in windows of 1024 tokens, each from position 0;
* greedy agreement with float32 on the three chats of the exactness tests
  (`tests/engine/test_llama.py`): how many of the first 32 greedy tokens match;
* resident weight bytes (parameters and buffers, the rope table excluded), and their ratio
  to bfloat16;
* the kernel-only ceiling: the time of one pass over every matrix at batch 1 (the weight
  cost of one decode step), and the tok/s that bounds;
* the load: seconds `load_model` took (reading the float checkpoint and quantizing it as it
  loads; its excess over `none` is the quantizer's time).

    python benchmarks/bench_quant.py [--quants none,bf16,int8,int4,int4-g32,int4-g64,gguf-int4]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from cortex.engine.device import read_cpu_features
from cortex.engine.gguf import default_gguf_path, default_model_dir, import_gguf
from cortex.engine.models import Llama, load_model
from cortex.engine.models.llama import linear
from cortex.engine.tokenizer import Tokenizer

TEXT = Path(__file__).parent / "data" / "lighthouses.txt"
WINDOW = 1024
CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Write a haiku about the sea."},
    ],
    [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Write a short story about a dragon who learns to bake bread."},
    ],
]


def perplexity(model: Llama, ids: list[int]) -> float:
    """exp of the mean next-token loss over `ids`, in windows of WINDOW tokens."""
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, WINDOW):
        window = ids[start : start + WINDOW + 1]
        logits = model(window[:-1])
        target = torch.tensor(window[1:])
        total += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
        count += len(target)
    return math.exp(total / count)


def resident_bytes(model: Llama) -> int:
    """Weights in memory: parameters and buffers (tied ones once), less the rope table."""
    tensors = {t.data_ptr(): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.nbytes for t in tensors.values()) - model.rope_table.nbytes


def weight_pass_ms(model: Llama, repeats: int = 7) -> float:
    """Median ms of one batch-1 pass over every matrix (layers and LM head)."""
    matrices: list[Any] = [model.lm_head]
    block: Any
    for block in model.layers:
        matrices += [block.attn.qkv_weight, block.attn.o_weight]
        matrices += [block.mlp.gate_up_weight, block.mlp.down_weight]
    rows = {m.shape[1]: torch.randn(1, m.shape[1], dtype=model.dtype) for m in matrices}
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            for m in matrices:
                linear(rows[m.shape[1]], m)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quants", default="none,bf16,int8,int4,int4-g32,int4-g64,gguf-int4")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = default_model_dir(progress=False)
    tokenizer = Tokenizer.from_dir(folder)
    ids = tokenizer.encode(TEXT.read_text())
    prompts = [tokenizer.apply_chat_template(chat) for chat in CHATS]
    cpu = read_cpu_features().model_name or platform.machine()
    print(f"CPU: {cpu}, {args.threads} threads, torch {torch.__version__}")
    print(f"text: {TEXT.name}, {len(ids)} tokens; greedy: 32 tokens of 3 chats")
    reference: list[list[int]] = []
    base_ppl = bf16_bytes = None
    print()
    print(
        "| quant | perplexity | vs first | greedy = float32 (of 32) | weights MB | vs bf16 "
        "| weight pass ms | ceiling tok/s | load s |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|", flush=True)
    for quant in args.quants.split(","):
        start = time.perf_counter()
        if quant == "gguf-int4":
            source = import_gguf(default_gguf_path(), progress=False, quant="int4")
            model = load_model(source)  # as stored: Q4_1 blocks int4, Q8_0 embedding int8
        else:
            model = load_model(folder, quant=quant)
        load_s = time.perf_counter() - start
        ppl = perplexity(model, ids)
        greedy = [model.generate(p, 32, stop_token_ids=()) for p in prompts]
        if not reference:
            reference, base_ppl = greedy, ppl
        agree = [
            next((i for i, (a, b) in enumerate(zip(g, r, strict=True)) if a != b), 32)
            for g, r in zip(greedy, reference, strict=True)
        ]
        size = resident_bytes(model)
        if quant == "bf16":
            bf16_bytes = size
        ms = weight_pass_ms(model)
        ratio = f"{size / bf16_bytes:.2f}x" if bf16_bytes else "-"
        assert base_ppl is not None
        print(
            f"| {quant} | {ppl:.3f} | {100 * (ppl / base_ppl - 1):+.2f}% | "
            f"{', '.join(map(str, agree))} | {size / 2**20:.1f} | {ratio} | {ms:.1f} | "
            f"{1000 / ms:.0f} | {load_s:.1f} |",
            flush=True,
        )
        del model
    print(f"\n    python benchmarks/bench_quant.py --quants {args.quants} --threads {args.threads}")


if __name__ == "__main__":
    main()
